// Fills the skeleton from the page's summary.json (Statuspage's v2 shape): text only, never HTML.
(function () {
  var banner = document.getElementById("skeleton");
  var labels = {
    operational: "Operational", degraded_performance: "Degraded performance",
    partial_outage: "Partial outage", major_outage: "Major outage",
    under_maintenance: "Under maintenance"
  };
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  fetch(banner.getAttribute("data-summary"), { headers: { Accept: "application/json" } })
    .then(function (response) {
      if (!response.ok) throw new Error("summary.json: " + response.status);
      return response.json();
    })
    .then(function (summary) {
      banner.className = "banner indicator-" + summary.status.indicator;
      banner.querySelector("h1").textContent = summary.status.description;
      var list = document.getElementById("component-list");
      summary.components.forEach(function (c) {
        if (c.group) return; // a group's own entry; its members follow
        var item = el("li", "component");
        var row = el("div", "row");
        row.appendChild(el("span", "cname", c.name));
        row.appendChild(el("span", "cstatus s-" + c.status, labels[c.status] || c.status));
        item.appendChild(row);
        list.appendChild(item);
      });
      list.setAttribute("aria-busy", "false");
      var incidents = summary.incidents || [];
      if (incidents.length) {
        var section = document.getElementById("incidents");
        incidents.forEach(function (i) {
          section.querySelector("ul").appendChild(el("li", "incident", i.name + " (" + i.status + ")"));
        });
        section.hidden = false;
      }
      document.documentElement.setAttribute("data-filled", "true");
    })
    .catch(function () {
      setTimeout(function () { location.reload(); }, 3000);
    });
})();
