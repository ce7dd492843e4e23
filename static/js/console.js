// Progressive enhancement only: every page works without this file.
// Elements with data-refresh-url reload their content from that URL every few seconds
// (delivery progress after a rule change) until the server marks them data-done="true".
(function () {
  "use strict";
  // Each poll waits half as long again as the last (3 s, 4.5 s, ... at most a minute): a page
  // left open on a rule whose hosts are offline costs the server little.
  function poll(el, previous) {
    var delay = previous
      ? Math.min(previous * 1.5, 60000)
      : parseInt(el.getAttribute("data-refresh-ms") || "3000", 10);
    window.setTimeout(function () {
      fetch(el.getAttribute("data-refresh-url"), {
        credentials: "same-origin",
        headers: { "X-Requested-With": "fetch" },
      })
        .then(function (r) {
          // Gone (404), no longer allowed (403) or signed out (sent to sign-in): stop.
          if (r.redirected || r.status === 404 || r.status === 403) return null;
          return r.ok ? r.text() : Promise.reject(r.status);
        })
        .then(function (html) {
          if (html === null) return;
          var holder = document.createElement("div");
          holder.innerHTML = html;
          var fresh = holder.firstElementChild;
          if (!fresh) return;
          el.replaceWith(fresh);
          if (fresh.getAttribute("data-done") !== "true") poll(fresh, delay);
        })
        .catch(function () { poll(el, delay); });
    }, delay);
  }
  function confirmForms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh-url]").forEach(function (el) {
      if (el.getAttribute("data-done") !== "true") poll(el);
    });
    confirmForms();
  });
})();
