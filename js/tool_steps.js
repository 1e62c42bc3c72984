// The panel's tool-call blocks, refusal line and approval prompt (nbchat.core.loop). Call names,
// arguments and results come from the model or a tool: they go in as text nodes, never as HTML.

import { h } from "./dom.js";

/**
 * A tool call that ran, its result collapsed under it.
 * @param {{ call: string, result: string }} step
 */
export function toolStepBlock(step) {
  return h("details", { class: "nbchat-tool-step" }, h("summary", {}, h("code", {}, String(step.call))), h("pre", {}, String(step.result)));
}

/**
 * A finished reply's tool steps (before its text) and refusal (after it).
 * @param {any} entry a transcript entry: `steps` [{call, result}], `refusal`
 * @param {HTMLElement} box the reply's bubble
 * @param {HTMLElement} body its text
 */
export function finishToolParts(entry, box, body) {
  for (const old of box.querySelectorAll(":scope > .nbchat-tool-step, :scope > .nbchat-refusal")) old.remove();
  for (const step of entry.steps || []) body.before(toolStepBlock(step));
  if (entry.refusal) body.after(h("div", { class: "nbchat-refusal" }, `Refused: ${entry.refusal}`));
}

/**
 * Asks the user whether a tool call may run: the call as text, Run and Deny; `answer` once.
 * @param {{ call: string }} msg
 * @param {(ok: boolean) => void} answer
 */
export function approvalBlock(msg, answer) {
  const run = h("button", { type: "button", class: "nbchat-approve" }, "Run");
  const deny = h("button", { type: "button", class: "nbchat-deny" }, "Deny");
  const box = h("div", { class: "nbchat-approval", role: "group", "aria-label": "Approve a tool call" }, h("div", {}, "Run this tool call?"), h("pre", {}, String(msg.call)), run, deny);
  /** @param {boolean} ok */
  const done = (ok) => {
    run.disabled = deny.disabled = true;
    box.classList.add(ok ? "nbchat-approved" : "nbchat-denied");
    answer(ok);
  };
  run.addEventListener("click", () => done(true));
  deny.addEventListener("click", () => done(false));
  return box;
}
