// Times: UTC, and relative to now, as the CLI shows them.

import { h } from "./dom.js";

/** A time relative to now: `in 3h`, `5m ago`, `now`. */
export function relative(iso) {
  const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
  const span = Math.abs(seconds);
  let amount;
  if (span === 0) return "now";
  if (span < 60) amount = `${span}s`;
  else if (Math.round(span / 60) < 60) amount = `${Math.round(span / 60)}m`;
  else if (Math.round(span / 3600) < 48) amount = `${Math.round(span / 3600)}h`;
  else amount = `${Math.round(span / 86400)}d`;
  return seconds > 0 ? `in ${amount}` : `${amount} ago`;
}

/** A time in UTC, to the second. */
export function utc(iso) {
  return new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

/** A `<time>` showing UTC and how far from now, or `none` for no time. */
export function when(iso, none = "—") {
  if (!iso) return none;
  return h("time", { datetime: iso }, utc(iso), h("span", { class: "sub" }, relative(iso)));
}

// A last use is kept to the minute: shown as its minute, and "this minute" while it lasts.
function minuteAgo(iso) {
  return Date.now() - Date.parse(iso) < 60000 ? "this minute" : relative(iso);
}

/** A last use as a `<time>` to the minute, or "Never". */
export function lastUse(iso) {
  if (!iso) return "Never";
  return h("time", { datetime: iso }, utc(iso).slice(0, 16) + " UTC", h("span", { class: "sub" }, minuteAgo(iso)));
}

/** A last use as text to the minute, or "never". */
export function lastUseText(iso) {
  return iso ? `${utc(iso).slice(0, 16)} UTC (${minuteAgo(iso)})` : "never";
}

/** A time as text: UTC, and how far from now. */
export function whenText(iso) {
  return `${utc(iso)} (${relative(iso)})`;
}
