// Cairn console: the only script besides htmx (the Content-Security-Policy
// allows no inline script). It shows times in the browser's time zone (the
// markup holds UTC, kept on hover) and puts the problem of a failed htmx
// request in the alert area.
"use strict";

function localTimes(root) {
  root.querySelectorAll("time[datetime]:not([data-relative])").forEach(function (el) {
    var at = new Date(el.getAttribute("datetime"));
    if (!isNaN(at.getTime())) {
      el.textContent = at.toLocaleString();
    }
  });
}

document.addEventListener("DOMContentLoaded", function () {
  localTimes(document);
  document.body.addEventListener("htmx:afterSwap", function (event) {
    localTimes(event.target.parentNode || document);
  });
  document.body.addEventListener("htmx:responseError", function (event) {
    var alerts = document.getElementById("alerts");
    if (!alerts) {
      return;
    }
    var page = new DOMParser().parseFromString(event.detail.xhr.responseText, "text/html");
    var detail = page.querySelector(".problem-detail");
    alerts.textContent = detail ? detail.textContent : "The request failed (" + event.detail.xhr.status + ").";
    alerts.classList.add("shown");
  });
  document.body.addEventListener("htmx:sendError", function () {
    var alerts = document.getElementById("alerts");
    if (alerts) {
      alerts.textContent = "Cairn did not answer; the page will retry.";
      alerts.classList.add("shown");
    }
  });
});
