// The success page's live counts: a bar, "6,000 of 100,001 members read", the time left, and a countdown
// while Discord's member-list window is shut. No inline style: the CSP allows our own files only.
(function () {
  "use strict";
  const box = document.getElementById("progress");
  if (!box) return;
  const bar = document.getElementById("progress-bar");
  const text = document.getElementById("progress-text");
  const url = box.dataset.statusUrl;
  const fmt = (n) => Number(n).toLocaleString("en-US");
  const members = (n) => fmt(n) + (n === 1 ? " member" : " members");
  // Where the count stood when we started watching it grow: the estimate of the time left comes from it.
  let first = null;
  box.hidden = false;

  function duration(seconds) {
    const s = Math.max(1, Math.round(seconds));
    if (s < 60) return s + " s";
    const minutes = Math.floor(s / 60);
    return minutes + " min" + (s % 60 ? " " + (s % 60) + " s" : "");
  }

  function show(message, value, max) {
    text.textContent = message;
    if (max) {
      bar.max = max;
      bar.value = Math.min(value, max);
    } else {
      bar.removeAttribute("value"); // indeterminate: moving, with no total to measure against
    }
  }

  function timeLeft(stored, total) {
    const now = Date.now();
    if (first === null || stored < first.stored) first = { time: now, stored: stored };
    const seconds = (now - first.time) / 1000;
    const rate = (stored - first.stored) / seconds;
    if (seconds < 2 || !(rate > 0)) return "";
    return " · about " + duration((total - stored) / rate) + " left";
  }

  // One state of the sync; returns whether to keep asking.
  function render(s) {
    const total = s.member_count;
    switch (s.state) {
      case "synced":
        show("Done: all " + members(s.members_stored) + " are read. From now on the bot keeps them in sync" +
          " as members join, leave or change. You can close this page.", 1, 1);
        return false;
      case "removed":
        show("The server was unlinked or the bot was removed from it, so no members are kept.", 0, 1);
        return false;
      case "failed":
        show("Reading members failed for now; the bot tries again by itself. You can close this page.");
        first = null;
        return true;
      case "waiting":
        first = null;
        show("Discord lets a bot read a server's whole member list once every 30 seconds, and this one was read" +
          " moments ago: reading starts in " + duration(s.waiting_seconds || 0) + ".", 0, total || 1);
        return true;
      case "syncing":
        if (total) {
          show(fmt(s.members_stored) + " of " + fmt(total) + " members read" + timeLeft(s.members_stored, total),
            s.members_stored, total);
        } else {
          show(members(s.members_stored) + " read so far");
        }
        return true;
      default:
        show("The bot is joining the server; reading its members starts in a moment.");
        return true;
    }
  }

  async function poll() {
    let again = true;
    try {
      const response = await fetch(url, { cache: "no-store" });
      if (!response.ok) {
        show("Progress is no longer shown here; the bot carries on by itself. You can close this page.", 0, 1);
        return;
      }
      again = render(await response.json());
    } catch (e) {
      text.textContent = "Reconnecting… (the bot carries on by itself)";
    }
    if (again) setTimeout(poll, 1000);
  }
  poll();
})();
