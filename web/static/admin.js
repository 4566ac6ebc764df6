// The console's live sync bars: polls /admin/sync.json and updates each server shown on the page.
// The pages work without it; this only keeps the bars moving. The poll does not count as activity, so a
// forgotten tab still signs itself out.
(function () {
  "use strict";
  const shown = new Map();
  document.querySelectorAll("[data-guild]").forEach((el) => shown.set(el.dataset.guild, el));
  if (shown.size === 0) return;
  const status = document.querySelector("[data-live-status]");
  const BUSY_MS = 1500;
  const IDLE_MS = 15000;
  const busy = (state) => ["pending", "waiting", "syncing", "failed"].includes(state);
  const fmt = (n) => Number(n).toLocaleString("en-US");
  // The list is paged: the poll asks for the page shown (the same `after`), not for every server.
  const after = new URLSearchParams(window.location.search).get("after");
  const syncUrl = "/admin/sync.json" + (after ? "?after=" + encodeURIComponent(after) : "");

  function field(el, name) {
    return el.querySelector('[data-field="' + name + '"]');
  }

  function update(el, view) {
    const label = field(el, "label");
    if (label) {
      label.textContent = view.label;
      label.className = "state state-" + view.state;
    }
    const detail = field(el, "detail");
    if (detail) detail.textContent = view.detail;
    const bar = field(el, "bar");
    if (bar) {
      bar.hidden = !view.bar;
      bar.max = view.bar_max;
      if (view.bar_value === null) bar.removeAttribute("value");
      else bar.value = view.bar_value;
      bar.textContent = view.detail;
    }
    const members = field(el, "members_stored");
    if (members) members.textContent = fmt(view.members_stored);
    const error = field(el, "error");
    // Empty shows a dash (CSS), and on a phone hides the row.
    if (error) error.textContent = view.error;
  }

  function say(text) {
    if (status) status.textContent = text;
  }

  async function poll() {
    let next = IDLE_MS;
    try {
      const response = await fetch(syncUrl, { cache: "no-store", credentials: "same-origin" });
      if (response.status === 401) {
        say("Your session has ended: reload the page to sign in again.");
        return;
      }
      if (!response.ok) throw new Error("status " + response.status);
      const body = await response.json();
      for (const view of body.guilds) {
        const el = shown.get(view.id);
        if (!el) continue;
        update(el, view);
        if (busy(view.state)) next = BUSY_MS;
      }
      say("Sync states update by themselves.");
    } catch (e) {
      say("Reconnecting…");
      next = BUSY_MS * 2;
    }
    setTimeout(poll, next);
  }
  poll();
})();
