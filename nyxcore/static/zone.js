// Tells NyxCore the browser's time zone (the nyxcore_tz cookie), so times are shown in it when the
// account has no zone of its own. Loaded as a file: the CSP allows scripts from 'self' only.
(function () {
  "use strict";
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (e) {
    return;
  }
  if (!zone || zone.length > 64 || !/^[A-Za-z0-9_+\-\/]+$/.test(zone)) {
    return;
  }
  var cookie = "nyxcore_tz=" + zone;
  var had = document.cookie.split("; ").indexOf(cookie) !== -1;
  document.cookie = cookie + "; path=/; max-age=31536000; SameSite=Lax" +
    (location.protocol === "https:" ? "; Secure" : "");
  var note = document.getElementById("zone-note");
  if (had || !note || note.dataset.zoneFromAccount === "yes" || note.dataset.zone === zone) {
    return;
  }
  // Shown in another zone than the browser's: show the page again, once, now that the server knows it.
  try {
    if (document.cookie.split("; ").indexOf(cookie) !== -1 && !sessionStorage.getItem("nyxcore_tz_reloaded")) {
      sessionStorage.setItem("nyxcore_tz_reloaded", "1"); // never a loop, whatever the server makes of it
      location.reload();
    }
  } catch (e) {
    // no sessionStorage (a private window may refuse it): the zone applies from the next page on
  }
})();
