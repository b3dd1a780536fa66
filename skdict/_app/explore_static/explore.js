// skdict atom explorer: a static single-page viewer of the data files written by
// skdict.explore.build_site. Data arrive as scripts assigning to window.SKDICT_DATA
// because browsers refuse fetch() of local files. Every string from the data is
// put in the page with textContent or setAttribute, never parsed as HTML.
(function () {
  "use strict";

  var DATA = window.SKDICT_DATA || (window.SKDICT_DATA = {});
  var SVG_NS = "http://www.w3.org/2000/svg";
  var ROWS_PER_PAGE = 100;
  var pending = {};
  var listState = { query: "", sort: "usage", descending: true, page: 0 };

  // ----- helpers -----------------------------------------------------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") node.textContent = attrs[name];
      else node.setAttribute(name, attrs[name]);
    });
    (children || []).forEach(function (child) {
      if (child !== null && child !== undefined) {
        node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
      }
    });
    return node;
  }

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    return node;
  }

  function fmt(value, digits) {
    return value === null || value === undefined ? "\u2014" : Number(value).toFixed(digits);
  }

  function pct(value) {
    return value === null || value === undefined ? "\u2014" : (100 * value).toFixed(1) + "%";
  }

  // Loads data/<file>.js once; resolves with SKDICT_DATA[key].
  function load(key, file) {
    if (DATA[key] !== undefined) return Promise.resolve(DATA[key]);
    if (!pending[key]) {
      pending[key] = new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        script.src = "data/" + file + ".js";
        script.onload = function () { resolve(DATA[key]); };
        script.onerror = function () {
          delete pending[key];
          reject(new Error("could not load data/" + file + ".js"));
        };
        document.head.appendChild(script);
      });
    }
    return pending[key];
  }

  function thumbPath(sample) {
    var folder = Math.floor(sample / DATA.overview.thumbs_per_folder);
    return "thumbs/" + folder + "/" + sample + ".png";
  }

  function atomLink(k, text) {
    return el("a", { href: "#/atom/" + Number(k), text: text === undefined ? "#" + k : text });
  }

  function card(id, label, value) {
    return el("div", { class: "card" }, [
      el("div", { class: "value", id: id, text: value }),
      el("div", { class: "label", text: label })
    ]);
  }

  // A bar chart of `counts` over [lo, hi) as inline SVG.
  function histogram(counts, lo, hi, caption, digits) {
    var width = 420, height = 120, pad = 18;
    var chart = svg("svg", {
      class: "hist", width: width, height: height + pad, viewBox: "0 0 " + width + " " + (height + pad)
    });
    var max = Math.max.apply(null, counts.concat([1]));
    var step = width / Math.max(counts.length, 1);
    var binWidth = (hi - lo) / Math.max(counts.length, 1);
    counts.forEach(function (count, i) {
      var h = (height - 4) * count / max;
      var bar = svg("rect", {
        x: i * step + 1, y: height - h, width: Math.max(step - 2, 1), height: h
      });
      var title = svg("title", {});
      title.textContent = fmt(lo + i * binWidth, digits) + " to " +
        fmt(lo + (i + 1) * binWidth, digits) + ": " + count;
      bar.appendChild(title);
      chart.appendChild(bar);
    });
    [[0, lo, "start"], [width, hi, "end"]].forEach(function (tick) {
      var label = svg("text", { x: tick[0], y: height + pad - 4, "text-anchor": tick[2] });
      label.textContent = fmt(tick[1], digits);
      chart.appendChild(label);
    });
    return el("figure", {}, [chart, el("figcaption", { class: "muted", text: caption })]);
  }

  function render(nodes) {
    var app = document.getElementById("app");
    app.replaceChildren.apply(app, nodes);
  }

  function fail(error) {
    render([el("p", { class: "error", text: String(error && error.message || error) })]);
  }

  // ----- overview and atom list -------------------------------------------

  function overviewPage() {
    var o = DATA.overview, s = o.scores;
    var nodes = [
      el("h1", { text: "Overview" }),
      el("div", { class: "cards" }, [
        card("stat-atoms", "atoms", String(o.n_atoms)),
        card("stat-alive", "alive (" + o.n_alive + ")", pct(o.alive_fraction)),
        card("stat-signal", "signal recovered", fmt(s.signal_recovered, 3)),
        card("stat-faithfulness", "faithfulness (AUROC)", fmt(s.faithfulness, 3)),
        card("stat-specificity", "specificity", fmt(s.specificity, 3)),
        card("stat-ev", "explained variance", fmt(s.explained_variance, 3)),
        card("stat-samples", "samples \u00d7 features", o.n_samples + " \u00d7 " + o.n_features)
      ]),
      o.n_concepts === null
        ? el("p", { class: "muted", text: "No concept bank: atoms are unnamed and faithfulness and specificity are not computed." })
        : el("p", { class: "muted", text: "Atoms named by the closest of " + o.n_concepts + " concepts." }),
      el("h2", { text: "Non-zero coefficients per sample (L0, mean " + fmt(o.l0.mean, 2) + ")" }),
      histogram(o.l0.counts, o.l0.lo, o.l0.hi, "samples per number of non-zero codes", 0),
      el("h2", { text: "Atoms" }),
      el("div", { id: "atom-list" }, [el("p", { class: "muted", text: "Loading atoms\u2026" })])
    ];
    render(nodes);
    load("atoms", "atoms").then(atomList).catch(fail);
  }

  function atomList(table) {
    var holder = document.getElementById("atom-list");
    if (!holder) return;
    var search = el("input", {
      id: "search", type: "search", placeholder: "search concept name or #atom",
      "aria-label": "search atoms"
    });
    search.value = listState.query;
    var count = el("span", { id: "atom-count", class: "muted" });
    var tbody = el("tbody", { id: "atom-rows" });
    var pager = el("span", { class: "pager" });
    var columns = [
      ["id", "atom", false], ["name", "concept", false], ["usage", "usage", true],
      ["mean", "mean |activation|", true], ["faith", "faithfulness", true]
    ];
    var head = el("tr", {}, columns.map(function (column) {
      var button = el("button", { type: "button", "data-sort": column[0], text: column[1] });
      button.addEventListener("click", function () {
        if (listState.sort === column[0]) listState.descending = !listState.descending;
        else { listState.sort = column[0]; listState.descending = column[2]; }
        listState.page = 0;
        refresh();
      });
      return el("th", { class: column[2] ? "num" : "" }, [button]);
    }));

    function nameOf(k) {
      return table.name[k] < 0 ? "" : table.names[table.name[k]];
    }

    function sortKey(k) {
      if (listState.sort === "id") return k;
      if (listState.sort === "name") return nameOf(k).toLowerCase();
      return table[listState.sort][k];
    }

    function matches(k, query) {
      if (!query) return true;
      if (query.charAt(0) === "#") return String(k) === query.slice(1);
      return nameOf(k).toLowerCase().indexOf(query) >= 0;
    }

    function refresh() {
      var query = listState.query.trim().toLowerCase();
      var atoms = [];
      for (var k = 0; k < table.usage.length; k++) if (matches(k, query)) atoms.push(k);
      var sign = listState.descending ? -1 : 1;
      atoms.sort(function (a, b) {
        var x = sortKey(a), y = sortKey(b);
        // Missing values (dead atoms, no bank) go last whatever the direction.
        if (x === null && y === null) return a - b;
        if (x === null) return 1;
        if (y === null) return -1;
        if (x < y) return -sign;
        if (x > y) return sign;
        return a - b;
      });
      var pages = Math.max(1, Math.ceil(atoms.length / ROWS_PER_PAGE));
      listState.page = Math.min(listState.page, pages - 1);
      var shown = atoms.slice(listState.page * ROWS_PER_PAGE, (listState.page + 1) * ROWS_PER_PAGE);
      tbody.replaceChildren.apply(tbody, shown.map(function (k) {
        return el("tr", { "data-atom": String(k) }, [
          el("td", {}, [atomLink(k)]),
          el("td", { class: "concept", text: nameOf(k) }),
          el("td", { class: "num", text: pct(table.usage[k]) }),
          el("td", { class: "num", text: fmt(table.mean[k], 3) }),
          el("td", { class: "num", text: fmt(table.faith[k], 3) })
        ]);
      }));
      count.textContent = atoms.length + " of " + table.usage.length + " atoms";
      head.querySelectorAll("button").forEach(function (button) {
        button.className = button.getAttribute("data-sort") === listState.sort ? "active" : "";
      });
      var previous = el("button", { type: "button", text: "\u2190 previous" });
      var next = el("button", { type: "button", text: "next \u2192" });
      previous.disabled = listState.page === 0;
      next.disabled = listState.page >= pages - 1;
      previous.addEventListener("click", function () { listState.page--; refresh(); });
      next.addEventListener("click", function () { listState.page++; refresh(); });
      pager.replaceChildren(previous, " page " + (listState.page + 1) + " of " + pages + " ", next);
    }

    search.addEventListener("input", function () {
      listState.query = search.value;
      listState.page = 0;
      refresh();
    });
    holder.replaceChildren(
      el("div", { class: "toolbar" }, [search, count, pager]),
      el("table", { id: "atoms" }, [el("thead", {}, [head]), tbody])
    );
    refresh();
  }

  // ----- atom page ---------------------------------------------------------

  function atomPage(k) {
    var o = DATA.overview;
    if (!(k >= 0 && k < o.n_atoms)) return fail("There is no atom " + k + ".");
    var page = Math.floor(k / o.page_size);
    render([el("p", { class: "muted", text: "Loading atom " + k + "\u2026" })]);
    load("page/" + page, "pages/" + page).then(function (atoms) {
      showAtom(atoms[k - page * o.page_size]);
    }).catch(fail);
  }

  function showAtom(a) {
    var o = DATA.overview;
    var title = el("h1", { id: "atom-title" }, [
      "Atom " + a.id,
      a.names.length ? el("span", { class: "muted", text: " \u00b7 " + a.names[0][0] }) : null
    ]);
    var nav = el("p", {}, [
      a.id > 0 ? atomLink(a.id - 1, "\u2190 atom " + (a.id - 1)) : null,
      " ",
      a.id + 1 < o.n_atoms ? atomLink(a.id + 1, "atom " + (a.id + 1) + " \u2192") : null
    ]);
    var cards = el("div", { class: "cards" }, [
      card("atom-usage", "usage (" + a.n_active + " samples)", pct(a.usage)),
      card("atom-mean", "mean |activation| when active", fmt(a.mean, 3)),
      card("atom-faith", "faithfulness (AUROC)", fmt(a.faith, 3)),
      card("atom-spec", "name retrieves atom", a.spec === null ? "\u2014" : (a.spec ? "yes" : "no"))
    ]);
    var names = a.names.length
      ? el("ol", { id: "atom-names" }, a.names.map(function (n) {
          return el("li", {}, [el("span", { class: "concept", text: n[0] }),
            el("span", { class: "muted", text: "  cos " + fmt(n[1], 3) })]);
        }))
      : el("p", { class: "muted", text: "No concept bank given." });
    var samples = a.top.length
      ? el("div", { class: "samples", id: "top-samples" }, a.top.map(function (t) {
          var caption = (t[2] === null ? "" : t[2] + " \u00b7 ") + "#" + t[0] + " \u00b7 " + fmt(t[1], 3);
          return el("div", { class: "sample" }, [
            o.has_images ? el("img", { src: thumbPath(t[0]), alt: "sample " + t[0] }) : null,
            el("div", { class: "caption", text: caption })
          ]);
        }))
      : el("p", { class: "muted", text: "This atom is dead: no sample uses it." });
    var nearest = el("ul", { class: "plain", id: "nearest" }, a.nearest.map(function (n) {
      return el("li", {}, [atomLink(n[0]), el("span", { class: "muted", text: "  cos " + fmt(n[1], 3) })]);
    }));
    var nodes = [title, nav, cards,
      el("div", { class: "columns" }, [
        el("section", {}, [el("h2", { text: "Concepts" }), names,
          a.sign < 0 ? el("p", { class: "muted", id: "atom-sign", text: "Its mean code is negative: named and projected as \u2212atom." }) : null]),
        el("section", {}, [el("h2", { text: "Nearest atoms (|cos|)" }), nearest])
      ]),
      el("h2", { text: "Top-activating samples (largest |activation|)" }), samples,
      el("h2", { text: "Activation histogram" }),
      a.hist.counts.length
        ? histogram(a.hist.counts, a.hist.lo, a.hist.hi, "non-zero activations", 2)
        : el("p", { class: "muted", text: "No activations." })
    ];
    if (a.push) nodes.push(el("div", { class: "columns", id: "classes" }, [
      classList("Classes pushed up", a.push), classList("Classes pushed down", a.pull)
    ]));
    render(nodes);
  }

  function classList(heading, classes) {
    return el("section", {}, [el("h2", { text: heading }),
      el("ul", { class: "plain" }, classes.map(function (c) {
        return el("li", {}, [el("span", { class: "class-name", text: c[0] }),
          el("span", { class: "muted", text: "  " + fmt(c[1], 3) })]);
      }))]);
  }

  // ----- comparison --------------------------------------------------------

  function comparePage() {
    var c = DATA.overview.compare;
    if (!c) return fail("No second dictionary was given to compare with.");
    render([el("p", { class: "muted", text: "Loading comparison\u2026" })]);
    load("compare", "compare").then(function (pairs) { showComparison(c, pairs); }).catch(fail);
  }

  function miniThumbs(samples) {
    if (!DATA.overview.has_images) return el("span", { class: "muted", text: samples.map(function (s) { return "#" + s; }).join(" ") });
    return el("span", { class: "mini" }, samples.map(function (s) {
      return el("img", { src: thumbPath(s), alt: "sample " + s });
    }));
  }

  function showComparison(c, pairs) {
    var o = DATA.overview, page = 0;
    var tbody = el("tbody", { id: "pair-rows" });
    var pager = el("span", { class: "pager" });
    function refresh() {
      var pages = Math.max(1, Math.ceil(pairs.length / ROWS_PER_PAGE));
      tbody.replaceChildren.apply(tbody, pairs.slice(page * ROWS_PER_PAGE, (page + 1) * ROWS_PER_PAGE).map(function (p) {
        return el("tr", {}, [
          el("td", {}, [atomLink(p[0])]), el("td", { class: "concept", text: p[3] || "" }),
          el("td", { class: "num", text: pct(p[5]) }), el("td", {}, [miniThumbs(p[7])]),
          el("td", { class: "num", text: fmt(p[2], 3) }),
          el("td", { text: "#" + p[1] }), el("td", { class: "concept", text: p[4] || "" }),
          el("td", { class: "num", text: pct(p[6]) }), el("td", {}, [miniThumbs(p[8])])
        ]);
      }));
      var previous = el("button", { type: "button", text: "\u2190 previous" });
      var next = el("button", { type: "button", text: "next \u2192" });
      previous.disabled = page === 0;
      next.disabled = page >= pages - 1;
      previous.addEventListener("click", function () { page--; refresh(); });
      next.addEventListener("click", function () { page++; refresh(); });
      pager.replaceChildren(previous, " page " + (page + 1) + " of " + pages + " ", next);
    }
    var header = el("tr", {}, ["atom", "concept", "usage", "top samples", "cos", "atom", "concept", "usage", "top samples"].map(function (h) {
      return el("th", { text: h });
    }));
    render([
      el("h1", { text: o.model + " vs " + c.model }),
      el("div", { class: "cards" }, [
        card("compare-pairs", "matched pairs", String(pairs.length)),
        card("compare-mean", "mean |cos| of pairs", fmt(c.mean_abs_cos, 3)),
        card("compare-close", "pairs with |cos| > 0.9", pct(c.share_above_0_9)),
        card("compare-alive", c.model + " alive", c.n_alive + " of " + c.n_atoms)
      ]),
      el("p", { class: "muted", text: "Atoms matched one to one by the Hungarian algorithm on |cos|, best matches first." }),
      el("div", { class: "toolbar" }, [pager]),
      el("table", { id: "pairs" }, [el("thead", {}, [header]), tbody])
    ]);
    refresh();
  }

  // ----- routing -----------------------------------------------------------

  function route() {
    var o = DATA.overview;
    if (!o) return fail("data/overview.js is missing: rebuild the site with skdict.explore.build_site.");
    document.getElementById("model").textContent =
      o.model + " \u00b7 " + o.n_atoms + " atoms" + (o.compare ? " \u00b7 vs " + o.compare.model : "");
    var nav = document.getElementById("nav");
    nav.replaceChildren(el("a", { href: "#/", text: "overview" }),
      o.compare ? el("a", { href: "#/compare", id: "compare-link", text: "comparison" }) : "");
    var hash = window.location.hash.replace(/^#\/?/, "");
    var atom = /^atom\/(\d+)$/.exec(hash);
    if (atom) atomPage(Number(atom[1]));
    else if (hash === "compare") comparePage();
    else overviewPage();
    window.scrollTo(0, 0);
  }

  window.addEventListener("hashchange", route);
  route();
})();
