// Keyward dashboard: copy buttons. Everything else works without script.
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  if (!field) return;
  const text = field.value;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Clipboard API refused (plain HTTP on another host): select, copy the old way.
    field.select();
    document.execCommand("copy");
  }
  const label = button.textContent;
  button.textContent = "Copied";
  button.setAttribute("aria-live", "polite");
  setTimeout(() => { button.textContent = label; }, 2000);
});
