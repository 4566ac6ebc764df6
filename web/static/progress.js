// Polls the sync's counts until the member list is read; the URL reveals nothing but counts.
(function () {
  const el = document.getElementById("progress");
  if (!el) return;
  const url = el.dataset.statusUrl;
  const fmt = (n) => Number(n).toLocaleString();
  async function poll() {
    try {
      const response = await fetch(url, { cache: "no-store" });
      if (!response.ok) { el.textContent = "Progress is no longer available."; return; }
      const s = await response.json();
      if (s.state === "synced") { el.textContent = fmt(s.members_stored) + " members read"; return; }
      if (s.state === "failed") { el.textContent = "Reading members failed; the bot will try again."; return; }
      el.textContent = "Reading members… " + fmt(s.members_stored) +
        (s.member_count ? " / " + fmt(s.member_count) : "");
    } catch (e) {
      el.textContent = "Reading members… (reconnecting)";
    }
    setTimeout(poll, 1000);
  }
  poll();
})();
