// Admin: registration on / off (seed 001's "Settings").

import { get, put } from "../api.js";
import { h, section, statusLine, act } from "../dom.js";

export default async function render(view) {
  view.append(h("h1", null, "Settings"));
  const status = statusLine();
  const box = h("input", { type: "checkbox", id: "registration-open", name: "registration" });
  const save = h("button", { type: "button" }, "Save");
  const stateText = h("p", { class: "hint" });
  view.append(section("Registration",
    h("p", null, "When registration is open, anyone who can reach this gateway can create a user account on the sign-in page. ",
      "The first account ever created becomes the administrator; after that registration closes until an administrator opens it."),
    h("div", { class: "check" }, box, h("label", { for: box.id }, "Allow new users to register")), save, stateText, status));

  let known = null;
  for (const path of ["/api/auth/registration", "/api/admin/registration"]) {
    try {
      const r = await get(path);
      known = !!(r.enabled ?? r.open);
      break;
    } catch (e) {
      if (!e.missing) { status.fail(`The current setting could not be read: ${e.message}`); break; }
    }
  }
  if (known === null) stateText.textContent = "Reading the current setting is not available on this gateway yet; saving sets it.";
  else { box.checked = known; stateText.textContent = `Registration is ${known ? "open" : "closed"}.`; }

  save.addEventListener("click", () => act(save, status, async () => {
    const r = await put("/api/admin/registration", { enabled: box.checked, open: box.checked });
    const now = !!(r && (r.enabled ?? r.open));
    box.checked = now;
    stateText.textContent = `Registration is ${now ? "open" : "closed"}.`;
    status.ok("Saved.");
  }));
}
