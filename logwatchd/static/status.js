// Refreshes the status page in place every data-refresh seconds; without JavaScript the page is the same, only static.
"use strict";
(function () {
  var seconds = Number(document.body.dataset.refresh) || 10;
  var note = document.getElementById("refresh");
  if (note) note.textContent = " · refreshes every " + seconds + " s";
  function refresh() {
    fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store" })
      .then(function (r) { return r.ok || r.status === 503 ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html").querySelector("main");
        var main = document.querySelector("main");
        if (next && main) main.replaceWith(next);
        if (note) note.textContent = " · refreshed " + new Date().toLocaleTimeString();
      })
      .catch(function () { if (note) note.textContent = " · the daemon does not answer"; })
      .finally(function () { setTimeout(refresh, seconds * 1000); });
  }
  setTimeout(refresh, seconds * 1000);
})();
