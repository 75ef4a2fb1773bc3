// The API: the signed-in key or person, requests made as them, and their failures.

let signedIn = null;
// A person signed in through the identity provider: who, and what their roles grant. Their
// token is in a cookie that this page cannot read; the browser sends it with every call.
let person = null;
const BASE = new URL(".", location.href);

/** A refusal or failure of the API, with its status and error code. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The key signed in with, while this page lives; `null` when signed out. */
export function signedInKey() {
  return signedIn;
}

/** Signs in with `key`, or out with `null`; the key stays in this module's memory only. */
export function setSignedIn(key) {
  signedIn = key;
}

/** The person signed in through the identity provider (GET /v1/session), or `null`. */
export function signedInPerson() {
  return person;
}

/** Takes the person of `session` as signed in, or no one with `null`. */
export function setPerson(session) {
  person = session;
}

/**
 * Who may sign in to this console: `{session}` for a signed-in person, `{people: true}` where
 * people sign in through the identity provider (and keys may not), `{people: false}` where
 * they sign in with keys. A refusal (no role, an unreachable provider) is thrown as ApiError.
 */
export async function loadSession() {
  const { response, json } = await exchange("v1/session", { headers: { "x-keyward-console": "1" }, cache: "no-store" });
  if (response.ok && json) return { session: json };
  const failure = refusal(response, json);
  if (response.status === 404 && failure.code === "people_not_configured") return { people: false };
  if (response.status === 401) return { people: true };
  throw failure;
}

/**
 * One request to keyward at `path`: its answer, and the answer's JSON (`null` when it is
 * none) with every string's hidden characters shown. An unreachable keyward is thrown.
 */
async function exchange(path, init) {
  let response;
  try {
    response = await fetch(new URL(path.replace(/^\//, ""), BASE), init);
  } catch {
    throw new ApiError(0, "unreachable", "keyward could not be reached. Check your connection and try again.");
  }
  return { response, json: revealHidden(await response.json().catch(() => null)) };
}

/** The refusal that an answer's status and error body say, as ApiError. */
function refusal(response, json) {
  const error = json && json.error ? json.error : {};
  return new ApiError(
    response.status,
    error.code || `http_${response.status}`,
    error.message || (json && json.message) || `keyward answered ${response.status}.`,
  );
}

// What happens when the signed-in key stops working: the page registers its sign-out.
let keyFailed = () => {};

/** Registers what happens when the signed-in key stops working (the page's sign-out). */
export function whenKeyFails(handler) {
  keyFailed = handler;
}

// The format of this deployment's keys (GET /v1/token-format), read once, before the first
// sign-in: its keys start with its own prefix, `kw` unless it sets another.
let format = null;

/** Reads the deployment's key format, once; it needs no key. */
export async function loadKeyFormat() {
  if (format) return format;
  const { response, json } = await exchange("v1/token-format");
  if (!response.ok || !json || !/^[a-z][a-z0-9]{1,9}$/.test(json.prefix)) {
    throw new ApiError(response.status, `http_${response.status}`, "keyward did not say what its keys look like.");
  }
  format = json;
  return format;
}

/** The environment a key's prefix names, or `null` for what is no key of this deployment. */
export function environmentOf(key) {
  if (!format) return null;
  const shape = new RegExp(`^${format.prefix}_(?:sk|pk)_([a-z0-9_]{1,32})_[A-Za-z0-9]{38}$`);
  const match = shape.exec(key);
  return match ? match[1].replaceAll("_", "-") : null;
}

// Invisible format characters (Unicode's category Cf: bidi controls, zero-width spaces),
// which keyward refuses in names since they can make one read as another. A name stored
// before that rule is shown with each of them escaped, never obeyed.
const HIDDEN = /\p{Cf}/gu;

/** `value` with every string in it showing its hidden characters as `\u{...}`. */
function revealHidden(value) {
  if (typeof value === "string") {
    return value.replace(HIDDEN, (c) => `\\u{${c.codePointAt(0).toString(16).padStart(4, "0")}}`);
  }
  if (Array.isArray(value)) return value.map(revealHidden);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, revealHidden(v)]));
  }
  return value;
}

/**
 * Calls the API with `key` (the signed-in one by default), or else as the signed-in person,
 * whose session's cookie goes only with the header that says the console is calling; a
 * refusal is thrown as ApiError.
 */
export async function api(method, path, body, key = signedInKey()) {
  const headers = key ? { Authorization: `Bearer ${key}` } : { "x-keyward-console": "1" };
  const init = { method, headers };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const { response, json } = await exchange(path, init);
  if (response.ok && json) return json;
  const failure = refusal(response, json);
  if (response.status === 401 && key && key === signedInKey()) {
    // Forgotten here first, so that no registration elsewhere is needed to drop a dead key.
    signedIn = null;
    keyFailed(`Your key no longer works (${failure.code}: ${failure.message}). Sign in with another key.`);
  } else if (response.status === 401 && !key && person) {
    person = null;
    // On AWS the gateway's own 401 speaks of keys: a person is told one thing.
    keyFailed(`Your session has ended (${failure.code}). Sign in again.`);
  }
  throw failure;
}

/** A failure said for people: its message and its code. */
export function describe(error) {
  if (!(error instanceof ApiError)) return `Something went wrong: ${error.message}`;
  if (error.status === 403) return `Not allowed: ${error.message} (${error.code}).`;
  return `${error.message} (${error.code}).`;
}
