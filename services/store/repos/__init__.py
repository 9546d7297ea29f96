"""Synchronous table access, one module per table; Store runs these on its worker threads.

Every function takes the peewee database as its first argument and executes against it
explicitly, and returns records from services/store/records.py, never peewee rows.
"""
