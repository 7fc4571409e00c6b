// While a mail on the invitations page is still queued, fetch the table again every few seconds and
// swap it in; stop once nothing is queued (the server leaves data-refresh empty), after five minutes,
// or at the first failure: the "Check again" link still works. A file, as the CSP allows only 'self'.
(function () {
  "use strict";
  var EVERY_MS = 4000;
  var MAX_TRIES = 75;
  var tries = 0;

  function schedule() {
    var box = document.getElementById("pending-live");
    if (!box || !box.dataset.refresh || tries >= MAX_TRIES) {
      return;
    }
    window.setTimeout(function () { refresh(box); }, EVERY_MS);
  }

  function refresh(box) {
    tries += 1;
    if (box.contains(document.activeElement)) {
      schedule(); // someone is on a button in the table: do not pull it from under them
      return;
    }
    fetch(box.dataset.refresh, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var holder = document.createElement("div");
        holder.innerHTML = html; // our own server's escaped template
        var fresh = holder.querySelector("#pending-live");
        if (fresh) {
          box.replaceWith(fresh);
          schedule();
        }
      })
      .catch(function () {});
  }

  schedule();
})();
