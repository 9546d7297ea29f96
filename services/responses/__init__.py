"""OpenAI's Responses API in the core: parsing, translation to the chat pipeline, events, storage."""
