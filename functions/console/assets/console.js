// The keyward console: every key action of the HTTP API, in a browser. Plain JavaScript, no
// build step and no request to any origin but its own. Where an identity provider is
// configured, people sign in through it: keyward's backend runs the sign-in and keeps the
// person's token in a cookie that no script reads, so this page never holds one. Elsewhere
// (local use) the console signs in with a key, which lives in this page's memory only (never
// in sessionStorage, which a browser restores with a reopened tab or session), and goes out
// only in `Authorization: Bearer`. A new secret is shown once, in its dialog, and removed
// from the page when the dialog closes.

import { api, describe, environmentOf, loadKeyFormat, loadSession, setPerson, setSignedIn, signedInKey, signedInPerson, whenKeyFails } from "./api.js";
import { buttons, closeDialogs, dialog, graceChoices, graceSubmit, held, secretPanel, textField } from "./dialogs.js";
import { h, svg, uid } from "./dom.js";
import { lastUse, lastUseText, relative, utc, when, whenText } from "./time.js";

// A page the browser keeps for its back button keeps its memory too: leaving it forgets the
// key, and coming back to it asks to sign in again (a person's session is asked for again).
addEventListener("pagehide", () => { setSignedIn(null); setPerson(null); });
addEventListener("pageshow", (event) => {
  if (!event.persisted) return;
  if (signInWith === "person") route();
  else signOut();
});
// A key or a session that stops working (a 401) signs out, and says why.
whenKeyFails(signOut);
const PAGE = 20;
const ACTIONS = [
  "key.created", "key.rotated", "key.grace_period_changed", "key.revoked", "key.expired",
  "key.expiring", "key.rotation_policy_changed", "key.allowed_ips_changed", "key.secret_delivered", "key.secret_delivery_failed", "key.grace_idle",
  "key.leaked", "environment.leak_policy_changed",
];

// ---- Signing in and out.

// How this console signs in: `null` until GET /v1/session has said, then "person" where an
// identity provider is configured (keys may not sign in), or "key" where none is.
let signInWith = null;
// The environment a signed-in person works in, chosen in the switcher; a key's is its own.
// Its name (never a token) outlives a reload in sessionStorage.
let chosen = null;
const CHOSEN = "keyward.environment";
// An environment's name, as keyward takes it.
const ENVIRONMENT = /^[a-z0-9-]{1,32}$/;

function currentEnvironment() {
  const key = signedInKey();
  return key ? environmentOf(key) : chosen;
}

function signOut(message) {
  setSignedIn(null);
  setPerson(null);
  closeDialogs(true);
  history.replaceState(null, "", location.pathname + location.search);
  if (signInWith === "person") renderPersonSignIn(message);
  else renderSignIn(message);
}

// Why a person's sign-in came back without them, by the code keyward put in the address;
// only keyward's own codes are said, so that a link cannot put words in the page.
const SIGN_IN_FAILURES = {
  sign_in_failed: "The sign-in did not complete: the identity provider refused it, or it came back unlike it left. Try again",
  identity_provider_unavailable: "The identity provider could not be reached. Try again",
};
const REFUSED_TOKEN = [
  "malformed_token", "unsupported_token_algorithm", "invalid_token_issuer", "unknown_token_key",
  "invalid_token_signature", "invalid_token_audience", "expired_token", "token_not_yet_valid",
];

function signInFailure(code) {
  if (Object.hasOwn(SIGN_IN_FAILURES, code)) return `${SIGN_IN_FAILURES[code]} (${code}).`;
  if (REFUSED_TOKEN.includes(code)) return `The identity provider's token was refused (${code}). Try again, or ask an administrator.`;
  return "";
}

function renderPersonSignIn(message, noRole = false) {
  document.getElementById("top").replaceChildren(h("h1", {}, "keyward"));
  document.getElementById("announce").textContent = "";
  const section = h("section", { class: "signin", "aria-labelledby": "signin-title" },
    h("h2", { id: "signin-title" }, "Sign in"),
    h("p", {}, "Sign in with your organization's account. Your session is kept in a cookie that this page cannot read. Signing out removes it from this browser, and asks your identity provider to end its own."),
    h("div", { class: "alert", role: "alert" }, message || ""),
    h("div", { class: "actions bar" }, noRole
      ? h("a", { class: "button", href: "console/sign-out" }, "Sign out")
      : h("a", { class: "button primary", href: "console/sign-in" }, "Sign in with your identity provider")),
  );
  document.getElementById("main").replaceChildren(section);
  document.title = "Sign in · keyward";
}

// Asks keyward who is signed in: a person's session outlives a reload, a key does not. True
// when a person is signed in; otherwise the page shows how to sign in.
async function findPerson(parts, params) {
  let found;
  try {
    found = await loadSession();
  } catch (failure) {
    signInWith = "person";
    if (failure.code === "no_role") {
      renderPersonSignIn(`You are signed in, but your groups grant no role in keyward (${failure.code}). Ask an administrator for one, or sign out and in as someone else.`, true);
    } else {
      renderPersonSignIn(`keyward could not say who is signed in: ${describe(failure)}`);
    }
    return false;
  }
  if (found.session) {
    signInWith = "person";
    setPerson(found.session);
    const kept = sessionStorage.getItem(CHOSEN);
    const named = namedEnvironments();
    chosen = kept && ENVIRONMENT.test(kept) && (named.includes(kept) || everyEnvironment()) ? kept : named[0] || null;
    return true;
  }
  signInWith = found.people ? "person" : "key";
  if (!found.people) renderSignIn();
  else if (parts[0] === "signed-out") renderPersonSignIn("You signed out.");
  else renderPersonSignIn(parts[0] === "sign-in" ? signInFailure(params.get("failed")) : "");
  return false;
}

// The environments a person's roles name, and whether a role grants every environment.
function namedEnvironments() {
  return Object.keys(signedInPerson().grants).filter((env) => env !== "*").sort();
}

function everyEnvironment() {
  return Object.hasOwn(signedInPerson().grants, "*");
}

// The environment switcher: the environments the person's roles name, or, where a role
// grants every environment, a field that takes any name and suggests those.
function switcher() {
  const named = namedEnvironments();
  const any = everyEnvironment();
  const field = any
    ? h("input", {
      id: "env-switch", name: "environment", list: "env-options", value: chosen || "", autocomplete: "off", spellcheck: "false", required: true, size: 14,
      pattern: "[a-z0-9\\-]{1,32}", title: "1 to 32 characters of a-z, 0-9 and -",
    })
    : h("select", { id: "env-switch", name: "environment" }, ...named.map((env) => h("option", { value: env, selected: env === chosen }, env)));
  return h("form", { class: "switch", onsubmit: (event) => { event.preventDefault(); switchTo(field.value.trim()); } },
    h("label", { for: "env-switch" }, "Environment"), field,
    any ? h("datalist", { id: "env-options" }, ...named.map((env) => h("option", { value: env }))) : null,
    h("button", { type: "submit" }, "Switch"));
}

function switchTo(env) {
  if (!ENVIRONMENT.test(env)) return;
  chosen = env;
  sessionStorage.setItem(CHOSEN, env);
  notices.text = `Switched to the environment ${env}.`;
  if (location.hash === "#/keys") route();
  else location.hash = "#/keys";
}

function renderChoose() {
  renderTop(null);
  page("Choose an environment",
    h("p", {}, "Your roles grant every environment. Type the one to work in beside Environment, above, and choose Switch."));
  document.getElementById("env-switch").focus();
}

function renderSignIn(message) {
  document.getElementById("top").replaceChildren(h("h1", {}, "keyward"));
  document.getElementById("announce").textContent = "";
  const error = h("div", { class: "alert", role: "alert" }, message || "");
  // A text field masked by CSS, not a password field: a browser offers to save a password
  // field's value, and an API key must not end up in a password manager.
  const input = h("input", {
    type: "text", id: "signin-key", name: "key", class: "masked", autocomplete: "off", spellcheck: "false", required: true,
  });
  const form = h("form", { class: "signin", onsubmit: (event) => signIn(event, input, error) },
    h("h2", {}, "Sign in"),
    h("p", {}, "Paste an API key of the environment you manage. It is kept in this page only, and forgotten when you sign out, reload or leave the page, or close the tab."),
    h("label", { for: "signin-key" }, "API key"),
    input,
    error,
    h("div", { class: "actions bar" }, h("button", { class: "primary", type: "submit" }, "Sign in")),
  );
  document.getElementById("main").replaceChildren(form);
  input.focus();
}

async function signIn(event, input, error) {
  event.preventDefault();
  const key = input.value.trim();
  let format;
  try {
    format = await loadKeyFormat();
  } catch (failure) {
    error.textContent = `This key cannot sign in: ${describe(failure)}`;
    return;
  }
  const env = environmentOf(key);
  if (!env) {
    error.textContent = `This is not a keyward key of this deployment: its keys look like ${format.prefix}_sk_<environment>_ followed by 38 letters and digits.`;
    return;
  }
  try {
    await api("GET", `/v1/environments/${env}/keys?limit=1`, undefined, key);
  } catch (failure) {
    error.textContent = failure.status === 403
      ? `This key cannot read keys: it needs the keys:read scope (${failure.code}).`
      : `This key cannot sign in: ${describe(failure)}`;
    return;
  }
  input.value = "";
  setSignedIn(key);
  if (!location.hash || location.hash === "#/") location.hash = "#/keys";
  route();
}

// ---- The frame: navigation, the environment, sign out.

function renderTop(current) {
  const link = (href, text, name) => h("a", { href, "aria-current": current === name ? "page" : false }, text);
  // A person switches environment and signs out at the provider too; a key has its own
  // environment, and signing out forgets it here.
  const person = signedInPerson();
  const who = person
    ? [switcher(),
      h("span", {}, "Signed in as ", h("strong", {}, person.person.name || person.person.id)),
      h("a", { class: "button", href: "console/sign-out" }, "Sign out")]
    : [h("span", {}, "Environment ", h("strong", {}, environmentOf(signedInKey()))),
      h("button", { type: "button", onclick: () => signOut("You signed out.") }, "Sign out")];
  document.getElementById("top").replaceChildren(
    h("h1", {}, "keyward"),
    h("nav", { "aria-label": "Main" }, h("ul", {},
      h("li", {}, link("#/keys", "Keys", "keys")),
      h("li", {}, h("span", { class: "group", id: "logs-label" }, "Logs"), " › ", link("#/activity", "Activity", "activity")),
    )),
    h("div", { class: "who" }, ...who),
  );
}

function page(title, ...content) {
  const main = document.getElementById("main");
  // replaceChildren, unlike h, would turn a null (such as notice()'s) into the text "null".
  main.replaceChildren(h("h2", { id: "page-title", tabindex: "-1" }, title), ...content.filter((c) => c !== null));
  document.title = `${title} · keyward`;
}

// What the last action did, said in the page's one status region, which is always in the
// page so that a screen reader announces the change of its text.
const notices = { text: "", focus: null };
function notice() {
  document.getElementById("announce").textContent = notices.text;
  notices.text = "";
  return null;
}

// ---- Keys.

function statusOf(key) {
  switch (key.status) {
    case "active": return "Active";
    case "in_grace": return `In grace, ends ${relative(key.expires_at)}`;
    case "expired": return "Expired";
    case "revoked": return "Revoked";
    default: return key.status;
  }
}

// A key reported leaked says so beside its status, wherever the status shows.
function statusBadge(key) {
  const status = h("span", { class: `badge status-${key.status}` }, statusOf(key));
  if (!key.leaked_at) return status;
  return h("span", {}, status,
    h("span", { class: "badge leaked", title: `Reported leaked ${whenText(key.leaked_at)}` }, "Leaked"));
}

function networksText(networks) {
  return networks?.length ? networks.join(", ") : "any address";
}

function policyText(policy) {
  return policy ? `Every ${policy.every}, grace ${policy.grace_period}, to ${policy.secret_id}` : "—";
}

async function renderKeys() {
  renderTop("keys");
  const env = currentEnvironment();
  const body = h("tbody");
  const error = h("div", { class: "alert", role: "alert" });
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const table = h("table", {},
    h("caption", {}, `Keys of ${env}, newest first`),
    h("thead", {}, h("tr", {}, ...["Name", "Kind", "Key", "Scopes", "Status", "Last used", "Created", "Expires", "Rotation policy"].map((t) => h("th", { scope: "col" }, t)), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
    body);
  page("Keys",
    h("div", { class: "bar" }, h("p", { class: "grow" }, "Each key is shown by its hint; its secret was shown once, when it was made."),
      h("button", { type: "button", class: "primary", onclick: (event) => createDialog(event.currentTarget) }, "Create key")),
    notice(), error, table, more);
  let cursor = null;
  const load = async () => {
    more.disabled = true;
    try {
      const query = `limit=${PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const answer = await api("GET", `/v1/environments/${encodeURIComponent(env)}/keys?${query}`);
      for (const key of answer.keys) body.append(keyRow(key));
      cursor = answer.next_cursor;
      more.hidden = !cursor;
    } catch (failure) {
      error.textContent = `The keys could not be read: ${describe(failure)}`;
    } finally {
      more.disabled = false;
    }
  };
  more.addEventListener("click", load);
  await load();
  refocus(body);
}

// After an action redraws the page, focus goes back to the acted-on key's Actions button, or
// else to the page's heading, never to nowhere.
function refocus(within) {
  const id = notices.focus;
  notices.focus = null;
  const again = id && within.querySelector(`[data-key-id="${id}"] button[aria-haspopup]`);
  if (again) again.focus();
  else if (document.activeElement === document.body) document.getElementById("page-title")?.focus();
}

function keyRow(key) {
  return h("tr", { "data-key-id": key.id },
    h("td", {}, h("a", { href: `#/keys/${key.id}` }, key.name),
      key.default ? h("span", { class: "badge default", title: "The environment's default key" }, "Default") : null,
      h("span", { class: "sub mono" }, key.id)),
    h("td", {}, key.kind),
    h("td", { class: "mono" }, key.hint),
    h("td", {}, key.scopes.length ? key.scopes.join(", ") : "—"),
    h("td", {}, statusBadge(key)),
    h("td", {}, lastUse(key.last_used_at)),
    h("td", {}, when(key.created_at)),
    h("td", {}, when(key.expires_at, "Never")),
    h("td", {}, policyText(key.rotation_policy)),
    h("td", {}, actionsMenu(key)),
  );
}

// ---- The row menu: the WAI-ARIA menu button pattern.

function actionsMenu(key) {
  const menuId = uid("menu");
  const button = h("button", {
    type: "button", "aria-haspopup": "menu", "aria-expanded": "false", "aria-controls": menuId,
    "aria-label": `Actions for ${key.name}`,
  }, "Actions ▾");
  const whyId = uid("why");
  const item = (label, enabled, act, why) => {
    const labelId = uid("label");
    return h("li", {
      role: "menuitem", tabindex: "-1", "aria-disabled": enabled ? false : "true",
      "aria-labelledby": labelId, "aria-describedby": why ? whyId : false,
      onclick: () => choose(enabled, act),
    }, h("span", { id: labelId }, label), why ? h("span", { class: "why", id: whyId }, why) : null);
  };
  const active = key.status === "active";
  const items = [
    item("Rotate key", active, () => rotateDialog(key, button)),
    item("Change grace period", key.status === "in_grace", () => graceDialog(key, button)),
    item("Revoke key", !key.default && key.status !== "revoked", () => revokeDialog(key, button),
      key.default ? "Default keys must be rotated before they can be revoked." : null),
    item("Rotation policy", active, () => policyDialog(key, button)),
    item("IP allowlist", active || key.status === "in_grace", () => allowlistDialog(key, button)),
    item("View activity", true, () => { location.hash = `#/keys/${key.id}/activity`; }),
  ];
  const menu = h("ul", { role: "menu", id: menuId, "aria-label": `Actions for ${key.name}`, hidden: true }, items);
  const open = (focusLast = false) => {
    closeMenus(menu);
    menu.hidden = false;
    button.setAttribute("aria-expanded", "true");
    (focusLast ? items[items.length - 1] : items[0]).focus();
  };
  const close = (refocus = true) => {
    menu.hidden = true;
    button.setAttribute("aria-expanded", "false");
    if (refocus) button.focus();
  };
  const choose = (enabled, act) => {
    if (!enabled) return;
    close(false);
    notices.focus = key.id;
    act();
  };
  button.addEventListener("click", () => (menu.hidden ? open() : close()));
  button.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown") { event.preventDefault(); open(); }
    if (event.key === "ArrowUp") { event.preventDefault(); open(true); }
  });
  menu.addEventListener("keydown", (event) => {
    const at = items.indexOf(document.activeElement);
    const move = (to) => { event.preventDefault(); items[(to + items.length) % items.length].focus(); };
    switch (event.key) {
      case "ArrowDown": move(at + 1); break;
      case "ArrowUp": move(at - 1); break;
      case "Home": move(0); break;
      case "End": move(items.length - 1); break;
      case "Escape": event.preventDefault(); close(); break;
      case "Tab": close(false); break;
      case "Enter":
      case " ":
        event.preventDefault();
        if (at >= 0) items[at].click();
        break;
      default: {
        const letter = event.key.length === 1 ? event.key.toLowerCase() : null;
        if (!letter) break;
        const found = items.findIndex((el, i) => i > at && el.textContent.toLowerCase().startsWith(letter));
        if (found >= 0) move(found);
      }
    }
  });
  menu.closeMenu = () => close(false);
  return h("div", { class: "menu-wrap" }, button, menu);
}

function closeMenus(except) {
  for (const menu of document.querySelectorAll('[role="menu"]')) {
    if (menu !== except && !menu.hidden) menu.closeMenu();
  }
}

document.addEventListener("click", (event) => {
  if (!event.target.closest(".menu-wrap")) closeMenus(null);
});

function rotateDialog(key, returnTo) {
  dialog(`Rotate key “${key.name}”`, (close, box, heading) => {
    const explain = h("p", { "aria-live": "polite" }, "Choose how long the old key keeps working.");
    const error = h("div", { class: "alert", role: "alert" });
    const choices = graceChoices(uid("grace"), () => {
      const seconds = choices.seconds();
      if (seconds === null) explain.textContent = "Choose how long the old key keeps working.";
      else if (seconds === 0) explain.textContent = "The new key works at once; the old one stops working at once.";
      else {
        let until = Date.now() + seconds * 1000;
        if (key.expires_at) until = Math.min(until, Date.parse(key.expires_at));
        explain.textContent = `The new key works at once; the old one keeps working until ${whenText(new Date(until).toISOString())}.`;
      }
    });
    const submit = h("button", { type: "submit", class: "primary" }, "Rotate key");
    const form = h("form", {
      onsubmit: graceSubmit(choices, error, submit, "The key was not rotated", async (grace) => {
        const answer = await held(box, api("POST", `/v1/keys/${key.id}/rotate`, { grace_period: grace }));
        heading.textContent = `Key “${key.name}” rotated`;
        const old = answer.previous;
        form.replaceWith(h("div", {},
          h("p", {}, `The new key ${answer.key.id} works now. `,
            old.status === "in_grace" ? `The old key ${old.id} keeps working until ${whenText(old.expires_at)}.` : `The old key ${old.id} no longer works.`),
          ...secretPanel(answer.secret, "The new key's secret"),
          buttons(h("button", { type: "button", class: "primary", onclick: close }, "Done"))));
        box.querySelector("input").focus();
        notices.text = `Rotated ${key.name}: the new key is ${answer.key.id}.`;
        box.addEventListener("close", route);
      }),
    }, choices.group, explain, error,
      buttons(h("button", { type: "button", onclick: close }, "Cancel"), submit));
    return [form];
  }, returnTo);
}

function graceDialog(key, returnTo) {
  dialog(`Change the grace period of “${key.name}”`, (close) => {
    const explain = h("p", { "aria-live": "polite" }, `It now keeps working until ${whenText(key.expires_at)}.`);
    const error = h("div", { class: "alert", role: "alert" });
    const choices = graceChoices(uid("grace"), () => {
      const seconds = choices.seconds();
      if (seconds === 0) explain.textContent = "It stops working at once.";
      else if (seconds !== null) explain.textContent = `It will keep working until ${whenText(new Date(Date.now() + seconds * 1000).toISOString())}, counted from now, but never past an expiry it had before its rotation.`;
    });
    const submit = h("button", { type: "submit", class: "primary" }, "Change grace period");
    return [h("form", {
      onsubmit: graceSubmit(choices, error, submit, "The grace period was not changed", async (grace) => {
        const answer = await api("PUT", `/v1/keys/${key.id}/grace-period`, { grace_period: grace });
        notices.text = answer.key.status === "expired"
          ? `${key.name} (${key.id}) no longer works.`
          : `${key.name} (${key.id}) now works until ${whenText(answer.key.expires_at)}.`;
        close();
        route();
      }),
    }, h("p", {}, `Key ${key.id}, in its grace since its rotation.`), explain, choices.group, error,
      buttons(h("button", { type: "button", onclick: close }, "Cancel"), submit))];
  }, returnTo);
}

function revokeDialog(key, returnTo) {
  dialog(`Revoke key “${key.name}”?`, (close) => {
    const error = h("div", { class: "alert", role: "alert" });
    const submit = h("button", { type: "button", class: "danger" }, "Revoke key");
    submit.addEventListener("click", async () => {
      submit.disabled = true;
      try {
        await api("POST", `/v1/keys/${key.id}/revoke`);
        notices.text = `Revoked ${key.name} (${key.id}).`;
        close();
        route();
      } catch (failure) {
        error.textContent = `The key was not revoked: ${describe(failure)}`;
        submit.disabled = false;
      }
    });
    return [
      h("p", {}, `Key ${key.id} fails on the very next request that uses it. This cannot be undone.`),
      error,
      buttons(h("button", { type: "button", onclick: close }, "Cancel"), submit),
    ];
  }, returnTo);
}

function policyDialog(key, returnTo) {
  dialog(`Rotation policy of “${key.name}”`, (close) => {
    const error = h("div", { class: "alert", role: "alert" });
    const policy = key.rotation_policy || {};
    const save = async (body) => {
      try {
        await api("PUT", `/v1/keys/${key.id}/rotation-policy`, body);
        notices.text = body.rotation_policy ? `Saved the rotation policy of ${key.name}.` : `Cleared the rotation policy of ${key.name}.`;
        close();
        route();
      } catch (failure) {
        error.textContent = `The policy was not saved: ${describe(failure)}`;
      }
    };
    const form = h("form", {
      onsubmit: (event) => {
        event.preventDefault();
        const data = new FormData(form);
        save({ rotation_policy: { every: data.get("every").trim(), grace_period: data.get("grace").trim(), secret_id: data.get("secret").trim() } });
      },
    },
    h("p", {}, "keyward rotates the key on this schedule and delivers each new secret to Secrets Manager."),
    ...textField("Rotate every", "every", policy.every, "An ISO-8601 duration from P1D to P365D, such as P30D."),
    ...textField("Grace period of each rotation", "grace", policy.grace_period, "At least 1h: 1h, 24h, 3d, 7d, or an ISO-8601 duration."),
    ...textField("Secrets Manager secret", "secret", policy.secret_id, "Its name or ARN, under this environment's prefix."),
    error,
    buttons(
      h("button", { type: "button", onclick: close }, "Cancel"),
      key.rotation_policy ? h("button", { type: "button", onclick: () => save({ rotation_policy: null }) }, "Clear policy") : null,
      h("button", { type: "submit", class: "primary" }, "Save policy")));
    return [form];
  }, returnTo);
}

function allowlistDialog(key, returnTo) {
  dialog(`IP allowlist of “${key.name}”`, (close) => {
    const error = h("div", { class: "alert", role: "alert" });
    const id = uid("networks");
    const save = async (networks) => {
      try {
        await api("PUT", `/v1/keys/${key.id}/allowed-ips`, { allowed_ips: networks });
        notices.text = networks.length ? `Saved the IP allowlist of ${key.name}.` : `${key.name} is accepted from any address.`;
        close();
        route();
      } catch (failure) {
        error.textContent = `The allowlist was not saved: ${describe(failure)}`;
      }
    };
    const form = h("form", {
      onsubmit: (event) => {
        event.preventDefault();
        save(new FormData(form).get("networks").split(/[\s,]+/).filter(Boolean));
      },
    },
    h("p", {}, "The key is accepted only from these networks, from its next request. Leave it empty to accept it from any address."),
    h("label", { for: id }, "Addresses and CIDR ranges"),
    h("p", { class: "hint", id: `${id}-hint` }, "One per line, IPv4 or IPv6, such as 198.51.100.0/24; up to 100."),
    h("textarea", { id, name: "networks", rows: "5", class: "mono", "aria-describedby": `${id}-hint` }, (key.allowed_ips || []).join("\n")),
    error,
    buttons(
      h("button", { type: "button", onclick: close }, "Cancel"),
      key.allowed_ips?.length ? h("button", { type: "button", onclick: () => save([]) }, "Allow any address") : null,
      h("button", { type: "submit", class: "primary" }, "Save allowlist")));
    return [form];
  }, returnTo);
}

function createDialog(returnTo) {
  const env = currentEnvironment();
  dialog("Create key", (close, box, heading) => {
    const error = h("div", { class: "alert", role: "alert" });
    const kindId = uid("kind");
    const expiresId = uid("expires");
    const submit = h("button", { type: "submit", class: "primary" }, "Create key");
    const form = h("form", {
      onsubmit: async (event) => {
        event.preventDefault();
        if (submit.disabled) return;
        const data = new FormData(form);
        const body = {
          name: data.get("name"),
          kind: data.get("kind"),
          scopes: data.get("scopes").split(/[\s,]+/).filter(Boolean),
        };
        if (data.get("expires")) body.expires_at = new Date(data.get("expires")).toISOString();
        const every = data.get("every").trim();
        if (every) body.rotation_policy = { every, grace_period: data.get("grace").trim(), secret_id: data.get("secret").trim() };
        submit.disabled = true;
        try {
          const answer = await held(box, api("POST", `/v1/environments/${encodeURIComponent(env)}/keys`, body));
          heading.textContent = `Key “${answer.key.name}” created`;
          form.replaceWith(h("div", {},
            h("p", {}, `Key ${answer.key.id} works now.`),
            ...secretPanel(answer.secret, "The key's secret"),
            buttons(h("button", { type: "button", class: "primary", onclick: close }, "Done"))));
          box.querySelector("input").focus();
          notices.text = `Created ${answer.key.name} (${answer.key.id}).`;
          box.addEventListener("close", route);
        } catch (failure) {
          error.textContent = `The key was not created: ${describe(failure)}`;
          submit.disabled = false;
        }
      },
    },
    ...textField("Name", "name", "", null),
    h("label", { for: kindId }, "Kind"),
    h("select", { id: kindId, name: "kind" },
      h("option", { value: "secret" }, "Secret: for servers, any scope"),
      h("option", { value: "publishable" }, "Publishable: for browsers and apps, custom scopes only")),
    ...textField("Scopes", "scopes", "", "Separated by spaces or commas, such as orders:read keys:read; * is full access. None by default."),
    h("label", { for: expiresId }, "Expires (optional, your local time)"),
    h("input", { type: "datetime-local", id: expiresId, name: "expires" }),
    h("fieldset", {}, h("legend", {}, "Rotation policy (optional)"),
      ...textField("Rotate every", "every", "", "Such as P30D; leave empty for no policy."),
      ...textField("Grace period of each rotation", "grace", "", "At least 1h."),
      ...textField("Secrets Manager secret", "secret", "", null)),
    error,
    buttons(h("button", { type: "button", onclick: close }, "Cancel"), submit));
    return [form];
  }, returnTo);
}

// ---- Activity: one key's, or the environment's with filters.

function actorText(actor) {
  if (actor.type === "user" && actor.name) return `${actor.name} (${actor.id})`;
  const kinds = { api_key: "API key", operator: "Operator", schedule: "Schedule", system: "System", user: "Person" };
  return `${kinds[actor.type] || actor.type} ${actor.id}`;
}

function detailsOf(entry) {
  switch (entry.action) {
    case "key.created": return `Name ${entry.name}, ${entry.kind}, scopes ${entry.scopes.length ? entry.scopes.join(", ") : "none"}, expires ${entry.expires_at ? whenText(entry.expires_at) : "never"}${entry.allowed_ips?.length ? `, allowed IPs ${entry.allowed_ips.join(", ")}` : ""}`;
    case "key.rotated": return `New key ${entry.new_key_id}, grace ${entry.grace_period}: the old key works until ${whenText(entry.expires_at)}`;
    case "key.grace_period_changed": return `Grace ${entry.grace_period}: works until ${whenText(entry.expires_at)}, was ${entry.previous_expires_at ? whenText(entry.previous_expires_at) : "never"}`;
    case "key.revoked": return `Revoked ${whenText(entry.revoked_at)}`;
    case "key.expired": return `Expired ${whenText(entry.expires_at)}`;
    case "key.expiring": return `Expires ${whenText(entry.expires_at)} (within ${entry.within})`;
    case "key.rotation_policy_changed": return entry.rotation_policy ? `Policy: ${policyText(entry.rotation_policy)}` : "Policy cleared";
    case "key.allowed_ips_changed": return `Allowed IPs ${networksText(entry.allowed_ips)}, was ${networksText(entry.previous)}`;
    case "key.secret_delivered": return `Delivered to ${entry.secret_id}, version ${entry.version_id}`;
    case "key.secret_delivery_failed": return `Delivery to ${entry.secret_id} failed ${entry.failures} times in a row; retried ${whenText(entry.retry_at)}`;
    case "key.grace_idle": return `No presentation recorded ${entry.last_presented_at ? `since ${lastUseText(entry.last_presented_at)}` : "since it was made"} while its successor ${entry.new_key_id} was used ${lastUseText(entry.successor_last_used_at)}; its grace ends ${entry.expires_at ? whenText(entry.expires_at) : "never"}`;
    case "key.leaked": return `Reported leaked${entry.url ? `, found at ${entry.url}` : ""}${entry.source ? ` (${entry.source})` : ""}; leak policy ${entry.leak_policy}`;
    case "environment.leak_policy_changed": return `Leak policy ${entry.leak_policy}, was ${entry.previous}`;
    default: return "";
  }
}

function activityTable(caption, path, withKey) {
  const body = h("tbody");
  const error = h("div", { class: "alert", role: "alert" });
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const empty = h("p", { hidden: true }, "No activity matches.");
  const columns = ["When", "Action", ...(withKey ? ["Key"] : []), "Actor", "Details"];
  const table = h("table", {}, h("caption", {}, caption),
    h("thead", {}, h("tr", {}, ...columns.map((c) => h("th", { scope: "col" }, c)))), body);
  let cursor = null;
  const load = async () => {
    more.disabled = true;
    try {
      const separator = path.includes("?") ? "&" : "?";
      const answer = await api("GET", `${path}${separator}limit=${PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      for (const entry of answer.entries) {
        body.append(h("tr", { "data-action": entry.action },
          h("td", {}, when(entry.at)),
          h("td", { class: "mono" }, entry.action),
          withKey ? h("td", {}, h("a", { href: `#/keys/${entry.key_id}`, class: "mono" }, entry.key_id)) : null,
          h("td", {}, actorText(entry.actor)),
          h("td", {}, detailsOf(entry))));
      }
      cursor = answer.next_cursor;
      more.hidden = !cursor;
      empty.hidden = body.children.length > 0 || Boolean(cursor);
    } catch (failure) {
      error.textContent = `The activity could not be read: ${describe(failure)}`;
    } finally {
      more.disabled = false;
    }
  };
  more.addEventListener("click", load);
  return { nodes: [error, table, empty, more], load };
}

async function renderActivity(params) {
  renderTop("activity");
  const env = currentEnvironment();
  const actionId = uid("action");
  const keyId = uid("key");
  const action = h("select", { id: actionId, name: "action" }, h("option", { value: "" }, "All actions"),
    ...ACTIONS.map((a) => h("option", { value: a, selected: params.get("action") === a }, a)));
  const key = h("input", { type: "text", id: keyId, name: "key_id", value: params.get("key_id") || "", placeholder: "key_...", spellcheck: "false" });
  const filters = h("form", {
    class: "filters", role: "search", "aria-label": "Filter activity",
    onsubmit: (event) => {
      event.preventDefault();
      const query = new URLSearchParams();
      if (action.value) query.set("action", action.value);
      if (key.value.trim()) query.set("key_id", key.value.trim());
      location.hash = `#/activity${query.toString() ? `?${query}` : ""}`;
    },
  },
  h("div", {}, h("label", { for: actionId }, "Action"), action),
  h("div", {}, h("label", { for: keyId }, "Key"), key),
  h("button", { type: "submit" }, "Apply filters"));
  const query = new URLSearchParams();
  for (const name of ["action", "key_id"]) if (params.get(name)) query.set(name, params.get(name));
  const path = `/v1/environments/${encodeURIComponent(env)}/activity${query.toString() ? `?${query}` : ""}`;
  const list = activityTable(`Activity of ${env}, newest first`, path, true);
  page("Activity", filters, ...list.nodes);
  await list.load();
}

// ---- One key: its fields, and its activity tab.

async function renderKey(id, tab) {
  renderTop("keys");
  let key;
  try {
    key = (await api("GET", `/v1/keys/${id}`)).key;
  } catch (failure) {
    page("Key", h("div", { class: "alert", role: "alert" }, `The key could not be read: ${describe(failure)}`),
      h("p", {}, h("a", { href: "#/keys" }, "Back to the keys")));
    return;
  }
  const link = (other) => (other ? h("a", { href: `#/keys/${other}`, class: "mono" }, other) : "—");
  const fields = h("dl", { class: "fields" },
    ...[
      ["Id", h("span", { class: "mono" }, key.id)],
      ["Environment", key.environment],
      ["Kind", key.kind],
      ["Status", statusBadge(key)],
      ["Last used", lastUse(key.last_used_at)],
      ["Last refused", lastUse(key.last_refused_at)],
      ["Default key", key.default ? "Yes: it must be rotated before it can be revoked" : "No"],
      ["Key", h("span", { class: "mono" }, key.hint)],
      ["Scopes", key.scopes.length ? key.scopes.join(", ") : "None"],
      ["Created", when(key.created_at)],
      ["Expires", when(key.expires_at, "Never")],
      ["Revoked", when(key.revoked_at)],
      ["Reported leaked", when(key.leaked_at)],
      ["Rotated from", link(key.rotated_from)],
      ["Rotated to", link(key.rotated_to)],
      ["Rotation policy", policyText(key.rotation_policy)],
      ["Allowed IPs", key.allowed_ips?.length ? h("span", { class: "mono" }, networksText(key.allowed_ips)) : "Any address"],
    ].flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
  const tabs = [["details", "Details"], ["usage", "Usage"], ["activity", "Activity"]];
  const panelId = uid("panel");
  const tabButtons = tabs.map(([name, text]) => h("button", {
    type: "button", role: "tab", id: `tab-${name}`, "aria-selected": String(name === tab), "aria-controls": panelId,
    tabindex: name === tab ? "0" : "-1",
    onclick: () => { location.hash = name === "details" ? `#/keys/${id}` : `#/keys/${id}/${name}`; },
  }, text));
  const tablist = h("div", { role: "tablist", "aria-label": "Key" }, tabButtons);
  tablist.addEventListener("keydown", (event) => {
    const at = tabButtons.findIndex((b) => b.getAttribute("aria-selected") === "true");
    const last = tabButtons.length - 1;
    const to = { ArrowRight: at === last ? 0 : at + 1, ArrowLeft: at === 0 ? last : at - 1, Home: 0, End: last }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    tabButtons[to].focus();
    tabButtons[to].click();
  });
  const panel = h("div", { role: "tabpanel", id: panelId, "aria-labelledby": `tab-${tab}`, tabindex: "0" });
  page(key.name,
    h("div", { class: "bar", "data-key-id": key.id }, h("a", { href: "#/keys" }, "← Keys"), h("span", { class: "grow" }), actionsMenu(key)),
    notice(), tablist, panel);
  if (tab === "activity") {
    const list = activityTable(`Activity of ${key.name}, newest first`, `/v1/keys/${id}/activity`, false);
    panel.replaceChildren(...list.nodes);
    await list.load();
  } else if (tab === "usage") {
    // Focus stays on the tab that was chosen while its three reads are on their way.
    if (routed.focusTab) document.getElementById(`tab-${tab}`).focus();
    panel.setAttribute("aria-busy", "true");
    panel.replaceChildren(...(await usagePanel(key)));
    panel.removeAttribute("aria-busy");
  } else {
    fields.append(h("dt", {}, "Seen from"), h("dd", {}, await seenFrom(key)));
    panel.replaceChildren(fields);
  }
  if (routed.focusTab) document.getElementById(`tab-${tab}`).focus();
  else refocus(document.getElementById("main"));
}

// The addresses the key's accepted checks came from this week, to build its allowlist from.
async function seenFrom(key) {
  let seen;
  try {
    seen = (await api("GET", `/v1/keys/${key.id}/usage`)).seen_ips;
  } catch (failure) {
    return `Could not be read: ${describe(failure)}`;
  }
  if (!seen.length) return "No accepted check this week came with an address";
  return h("ul", { class: "seen" }, ...seen.map((s) =>
    h("li", {}, h("span", { class: "mono" }, s.address), ` last in the hour from ${utc(s.last_seen_hour)}`)));
}

// ---- One key's usage: its checks per hour, beside its successor's while it is in its grace.

const USAGE_HOURS = 24;

/**
 * The accepted checks per hour, oldest on the left, as a line for the key and one for its
 * successor: inline SVG drawn here, no library and no other origin. It is one image to
 * assistive technology, named by its summary; the table beside it holds every number.
 */
function usageChart(key, hours, theirs) {
  const width = 720, height = 200, left = 44, bottom = 28, top = 12;
  const ownCounts = hours.map((hour) => hour.accepted);
  const theirCounts = theirs ? hours.map((hour) => theirs.find((x) => x.hour === hour.hour)?.accepted ?? 0) : [];
  const highest = Math.max(1, ...ownCounts, ...theirCounts);
  const x = (i) => left + (i * (width - left - 8)) / Math.max(1, hours.length - 1);
  const y = (n) => top + (height - top - bottom) * (1 - n / highest);
  const line = (counts, cls) => svg("polyline", { class: cls, points: counts.map((n, i) => `${x(i)},${y(n)}`).join(" ") });
  const total = (counts) => counts.reduce((a, b) => a + b, 0);
  const summary = theirs
    ? `Accepted checks per hour over the last ${hours.length} hours: ${key.name} ${total(ownCounts)}, its successor ${total(theirCounts)}, at most ${highest} in an hour.`
    : `Accepted checks per hour over the last ${hours.length} hours: ${total(ownCounts)} in all, at most ${highest} in an hour.`;
  const label = (i) => utc(hours[i].hour).slice(11, 16);
  const ticks = hours.length ? [0, Math.floor((hours.length - 1) / 2), hours.length - 1] : [];
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": summary },
    svg("line", { class: "axis", x1: left, y1: y(0), x2: width - 8, y2: y(0) }),
    svg("text", { class: "tick", x: left - 6, y: y(highest) + 4, "text-anchor": "end" }, String(highest)),
    svg("text", { class: "tick", x: left - 6, y: y(0) + 4, "text-anchor": "end" }, "0"),
    ...ticks.map((i, n) => svg("text", { class: "tick", x: x(i), y: height - 8, "text-anchor": ["start", "middle", "end"][n] }, label(i))),
    line(ownCounts, "own"),
    theirs ? line(theirCounts, "successor") : null);
  const legend = h("p", { class: "legend" },
    h("span", { class: "swatch own" }), ` ${key.name}`,
    ...(theirs ? [h("span", { class: "swatch successor" }), " its successor"] : []),
    " (accepted checks per hour, UTC)");
  return h("figure", { class: "usage-chart" }, chart, h("figcaption", {}, legend));
}

async function usagePanel(key) {
  let own, successor = null, theirs = null;
  try {
    own = (await api("GET", `/v1/keys/${key.id}/usage`)).hours;
    if (key.rotated_to) {
      successor = (await api("GET", `/v1/keys/${key.rotated_to}`)).key;
      theirs = (await api("GET", `/v1/keys/${key.rotated_to}/usage`)).hours;
    }
  } catch (failure) {
    return [h("div", { class: "alert", role: "alert" }, `The usage could not be read: ${describe(failure)}`)];
  }
  const hours = own.slice(-USAGE_HOURS).reverse();
  const count = (list, hour, field) => String((list || []).find((x) => x.hour === hour)?.[field] ?? 0);
  const columns = ["Hour (UTC)", "Accepted", "Refused", ...(successor ? ["Successor accepted", "Successor refused"] : [])];
  const table = h("table", { class: "usage" },
    h("caption", {}, `Checks of ${key.name} per hour, the last ${USAGE_HOURS} hours, newest first`),
    h("thead", {}, h("tr", {}, ...columns.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, ...hours.map((hour) => h("tr", {},
      h("th", { scope: "row" }, h("time", { datetime: hour.hour }, utc(hour.hour).slice(0, 16))),
      h("td", {}, String(hour.accepted)),
      h("td", {}, String(hour.refused)),
      ...(successor ? [h("td", {}, count(theirs, hour.hour, "accepted")), h("td", {}, count(theirs, hour.hour, "refused"))] : []),
    ))));
  const nodes = [];
  if (successor) {
    nodes.push(h("p", {}, "Its successor is ", h("a", { href: `#/keys/${successor.id}`, class: "mono" }, successor.id),
      `, last used ${lastUseText(successor.last_used_at)}.`));
    const hour = 3600000;
    const presented = [key.last_used_at, key.last_refused_at].filter(Boolean).map(Date.parse);
    const quiet = presented.every((t) => Date.now() - t >= hour);
    const takenOver = successor.last_used_at && Date.now() - Date.parse(successor.last_used_at) < hour;
    if (key.status === "in_grace" && quiet && takenOver) {
      const cut = h("button", { type: "button", onclick: (event) => graceDialog(key, event.currentTarget) }, "Change grace period");
      nodes.push(h("div", { class: "callout", role: "note" },
        h("p", {}, "No presentation of this key is recorded for an hour while its successor's is: the services seen have switched, and its grace can be cut. A service that calls less often than hourly, or that sits behind an authorizer with a result cache, would not show here."), cut));
    }
  }
  nodes.push(usageChart(key, own.slice(-USAGE_HOURS), successor ? theirs : null));
  nodes.push(table, h("p", { class: "sub" }, "Checks reach keyward up to a minute or so after they are made, so the current hour is still filling."));
  return nodes;
}

// ---- Routing by the URL's fragment.

const routed = { focusTab: false };

async function route() {
  closeMenus(null);
  const [path, query] = (location.hash.slice(1) || "/keys").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  if (!signedInKey() && !signedInPerson()) {
    if (signInWith === "key") {
      renderSignIn();
      return;
    }
    if (!(await findPerson(parts, params))) return;
  }
  if (!currentEnvironment()) return renderChoose();
  if (parts[0] === "activity") return renderActivity(params);
  if (parts[0] === "keys" && parts[1] && /^key_[A-Za-z0-9]{22}$/.test(parts[1])) {
    return renderKey(parts[1], ["activity", "usage"].includes(parts[2]) ? parts[2] : "details");
  }
  return renderKeys();
}

window.addEventListener("hashchange", () => {
  if (location.hash && !location.hash.startsWith("#/")) return;
  routed.focusTab = document.activeElement && document.activeElement.getAttribute("role") === "tab";
  closeDialogs();
  route();
});
route();
