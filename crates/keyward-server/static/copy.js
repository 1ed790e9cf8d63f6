// The copy button of the page that shows a new token. Loaded as a file: the
// Content-Security-Policy forbids inline script.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var button = document.getElementById("copy");
  if (!button) return;
  var field = document.getElementById(button.getAttribute("data-copy"));
  var status = document.getElementById("copy-status");
  field.addEventListener("focus", function () { field.select(); });
  button.addEventListener("click", function () {
    var done = function () {
      button.textContent = "Copied";
      status.textContent = "The token is on your clipboard.";
      setTimeout(function () { button.textContent = "Copy"; }, 2000);
    };
    field.focus();
    field.select();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () {
        status.textContent = "Press Ctrl+C (or Cmd+C) to copy the selected token.";
      });
    } else if (document.execCommand && document.execCommand("copy")) {
      done();
    } else {
      status.textContent = "Press Ctrl+C (or Cmd+C) to copy the selected token.";
    }
  });
});
