// The run inspector: a click on a node box opens that node's row; an active execution fetches
// its new state from <id>/live/ and swaps it in, keeping the open rows open.
(function () {
  "use strict";
  const root = document.getElementById("wc-inspector");
  if (!root) return;

  function openNode(key) {
    const row = document.getElementById("node-" + key);
    if (!row) return;
    row.open = true;
    root.querySelectorAll("g.node.wc-selected").forEach((g) => g.classList.remove("wc-selected"));
    root.querySelectorAll("g.node").forEach((g) => {
      if (g.dataset.node === key) g.classList.add("wc-selected");
    });
    row.classList.add("wc-flash");
    setTimeout(() => row.classList.remove("wc-flash"), 1200);
    row.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  root.addEventListener("click", (event) => {
    const target = event.target.closest("g.node, a.wc-node-link");
    if (!target || !root.contains(target)) return;
    event.preventDefault();
    openNode(target.dataset.node);
  });

  const url = root.dataset.liveUrl;
  const every = Math.max(200, parseInt(root.dataset.refreshMs, 10) || 1500);
  if (!url || root.dataset.active !== "1") return;

  async function refresh() {
    let body;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) return setTimeout(refresh, every * 2);
      body = await response.json();
    } catch (error) {
      return setTimeout(refresh, every * 2);  // the server is restarting: try again later
    }
    const open = new Set(Array.from(root.querySelectorAll("details.wc-node[open]"), (d) => d.dataset.node));
    const selected = root.querySelector("g.node.wc-selected");
    root.innerHTML = body.html;
    open.forEach((key) => {
      const row = document.getElementById("node-" + key);
      if (row) row.open = true;
    });
    if (selected) {
      root.querySelectorAll("g.node").forEach((g) => {
        if (g.dataset.node === selected.dataset.node) g.classList.add("wc-selected");
      });
    }
    root.dataset.active = body.active ? "1" : "0";
    if (body.active) setTimeout(refresh, every);
  }
  setTimeout(refresh, every);
})();
