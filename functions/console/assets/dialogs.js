// Dialogs: native modal dialogs, which keep focus inside; focus goes back on close. And the
// parts the key actions' dialogs share: grace choices, a secret shown once, text fields.

import { describe } from "./api.js";
import { h, uid } from "./dom.js";

const GRACES = [
  ["now", "Now", 0],
  ["1h", "In 1 hour", 3600],
  ["24h", "In 24 hours", 86400],
  ["3d", "In 3 days", 259200],
  ["7d", "In 7 days", 604800],
];

// Closes every dialog but one waiting for a secret, unless `all` (signing out).
export function closeDialogs(all = false) {
  for (const dialog of document.querySelectorAll("dialog")) {
    if (all || !dialog.dataset.busy) dialog.close();
  }
}

/** Opens a modal dialog titled `title`, its content from `build(close, box, heading)`. */
export function dialog(title, build, returnTo) {
  const titleId = uid("title");
  const box = h("dialog", { "aria-labelledby": titleId });
  const heading = h("h2", { id: titleId }, title);
  box.addEventListener("close", () => {
    box.remove();
    if (returnTo && returnTo.isConnected) returnTo.focus();
    else if (!document.activeElement || document.activeElement === document.body) {
      document.getElementById("page-title")?.focus();
    }
  });
  box.addEventListener("keydown", (event) => {
    if (event.key !== "Tab") return;
    const focusable = [...box.querySelectorAll("a[href], button, input, select, textarea")]
      .filter((el) => !el.disabled && el.offsetParent !== null);
    if (!focusable.length) return;
    const first = focusable[0];
    const last = focusable[focusable.length - 1];
    if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  });
  // While a create or rotate is on its way, the dialog stays open: its answer holds a
  // secret that is shown nowhere else.
  box.addEventListener("cancel", (event) => {
    if (box.dataset.busy) event.preventDefault();
  });
  document.body.append(box);
  const close = () => {
    if (!box.dataset.busy) box.close();
  };
  box.replaceChildren(heading, ...build(close, box, heading));
  box.showModal();
  const first = box.querySelector("input:not([disabled]), select, button.primary") || box.querySelector("button");
  if (first) first.focus();
  return box;
}

// Waits for a request whose answer holds a secret, with its dialog kept open meanwhile.
export async function held(box, request) {
  box.dataset.busy = "yes";
  try {
    return await request;
  } finally {
    delete box.dataset.busy;
  }
}

/** A dialog's row of buttons. */
export function buttons(...list) {
  return h("div", { class: "actions" }, ...list);
}

// The secret, shown once: a read-only field, a copy button, a warning. Closing the dialog
// removes all of it from the page.
export function secretPanel(secret, label) {
  const id = uid("secret");
  const field = h("input", { type: "text", id, readonly: true, class: "mono", spellcheck: "false" });
  field.value = secret;
  const said = h("p", { role: "status", class: "hint" });
  const copy = h("button", {
    type: "button",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(field.value);
        said.textContent = "Copied.";
      } catch {
        field.select();
        said.textContent = "The browser did not allow copying: the secret is selected, copy it with your keyboard.";
      }
    },
  }, "Copy");
  return [
    h("label", { for: id }, label),
    h("div", { class: "secret" }, field, copy),
    said,
    h("p", { class: "warning" }, "This secret is shown only this once. Store it now: keyward keeps only its hash, and cannot show it again."),
  ];
}

/** The grace choices (presets and a custom duration), with the chosen value and its seconds. */
export function graceChoices(name, onchange) {
  const labelId = uid("grace-label");
  const customId = uid("custom");
  const custom = h("input", { type: "text", id: customId, disabled: true, placeholder: "P14D, PT36H or 5400", "aria-describedby": `${customId}-hint` });
  const radios = [];
  const radio = (value, text) => {
    const input = h("input", { type: "radio", name, value });
    input.addEventListener("change", () => {
      custom.disabled = value !== "custom";
      if (value === "custom") custom.focus();
      onchange();
    });
    radios.push(input);
    return h("label", {}, input, text);
  };
  const group = h("div", { role: "radiogroup", "aria-labelledby": labelId, class: "choices" },
    h("p", { class: "radiogroup-label", id: labelId }, "Grace period"),
    ...GRACES.map(([value, text]) => radio(value, text)),
    radio("custom", "Custom"),
    h("label", { for: customId }, "Custom grace period"),
    custom,
    h("p", { class: "hint", id: `${customId}-hint` }, "An ISO-8601 duration (P14D, PT36H) or a number of seconds, up to 365 days."),
  );
  custom.addEventListener("input", onchange);
  return {
    group,
    value() {
      const chosen = radios.find((r) => r.checked);
      if (!chosen) return null;
      if (chosen.value !== "custom") return chosen.value;
      const text = custom.value.trim();
      return /^\d+$/.test(text) ? Number(text) : text;
    },
    seconds() {
      const chosen = radios.find((r) => r.checked);
      if (!chosen) return null;
      const preset = GRACES.find(([value]) => value === chosen.value);
      if (preset) return preset[2];
      return parseDuration(custom.value.trim());
    },
  };
}

// Seconds in an ISO-8601 duration of weeks, days, hours, minutes and seconds, or in a number.
function parseDuration(text) {
  if (/^\d+$/.test(text)) return Number(text);
  const match = /^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$/.exec(text);
  if (!match || text === "P" || text.endsWith("T")) return null;
  const [w, d, hr, m, s] = match.slice(1).map((n) => Number(n || 0));
  return (((w * 7 + d) * 24 + hr) * 60 + m) * 60 + s;
}

// A grace dialog's submit handler: it asks for a choice when none is made, sends the chosen
// grace, and shows a refusal in the dialog, where the user acted.
export function graceSubmit(choices, error, submit, failed, send) {
  return async (event) => {
    event.preventDefault();
    const grace = choices.value();
    if (grace === null || grace === "") {
      error.textContent = "Choose a grace period first.";
      return;
    }
    submit.disabled = true;
    try {
      await send(grace);
    } catch (failure) {
      error.textContent = `${failed}: ${describe(failure)}`;
      submit.disabled = false;
    }
  };
}

/** A labelled text field, with its hint tied to it. */
export function textField(label, name, value, hint) {
  const id = uid(name);
  return [
    h("label", { for: id }, label),
    hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null,
    h("input", { type: "text", id, name, value: value || "", "aria-describedby": hint ? `${id}-hint` : false }),
  ];
}
