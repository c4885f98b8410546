// Small DOM helpers shared by the views: elements by id, notices, form errors, busy controls.

import type { Problem } from "./errors";

type Ctor<T> = { new (): T; prototype: T };

export function byId<T extends HTMLElement>(id: string, type: Ctor<T>): T {
  const found = document.getElementById(id);
  if (!(found instanceof type)) throw new Error(`#${id} is missing from index.html`);
  return found;
}

const notice = byId("notice", HTMLDivElement);

/** A form's inputs by proto field name, with the element that shows each field's error. */
export interface FormSlots {
  fields: Record<string, { input: HTMLInputElement | HTMLTextAreaElement; error: HTMLElement }>;
  /** Errors that belong to no single input. */
  formError: HTMLElement;
}

export function showNotice(message: string, kind: "info" | "error" = "info"): void {
  notice.dataset.kind = kind;
  notice.textContent = message;
}

export function clearNotice(): void {
  notice.textContent = "";
  delete notice.dataset.kind;
}

export function clearFormProblem(slots: FormSlots): void {
  for (const { input, error } of Object.values(slots.fields)) {
    input.removeAttribute("aria-invalid");
    error.textContent = "";
    error.hidden = true;
  }
  slots.formError.textContent = "";
  slots.formError.hidden = true;
}

/** Field violations go under their inputs (the first bad input gets focus); the rest above the buttons. */
export function showFormProblem(slots: FormSlots, problem: Problem): void {
  clearFormProblem(slots);
  const unplaced: string[] = [];
  let first: HTMLInputElement | HTMLTextAreaElement | null = null;
  for (const [field, description] of problem.fields) {
    const slot = slots.fields[field];
    if (slot === undefined) {
      unplaced.push(`${field}: ${description}`);
      continue;
    }
    slot.error.textContent = `${field}: ${description}`;
    slot.error.hidden = false;
    slot.input.setAttribute("aria-invalid", "true");
    first ??= slot.input;
  }
  const formMessage = problem.fields.size > 0 ? unplaced.join("; ") : problem.message;
  if (formMessage !== "") {
    slots.formError.textContent = formMessage;
    slots.formError.hidden = false;
  }
  first?.focus();
}

/**
 * Locks the controls of `scope` while `work` runs: buttons and checkboxes are disabled, text
 * fields made read-only (so they can still take the focus, e.g. to point at an error).
 */
export async function busy(scope: HTMLElement, work: () => Promise<void>): Promise<void> {
  const focused = document.activeElement instanceof HTMLElement ? document.activeElement : null;
  const switches = [...scope.querySelectorAll<HTMLButtonElement | HTMLInputElement>('button, input[type="checkbox"]')];
  const fields = [...scope.querySelectorAll<HTMLInputElement | HTMLTextAreaElement>('input:not([type="checkbox"]), textarea')];
  const wasDisabled = switches.map((c) => c.disabled);
  const wasReadOnly = fields.map((f) => f.readOnly);
  scope.setAttribute("aria-busy", "true");
  switches.forEach((c) => (c.disabled = true));
  fields.forEach((f) => (f.readOnly = true));
  try {
    await work();
  } finally {
    scope.removeAttribute("aria-busy");
    // The scope may have been re-rendered meanwhile; restoring detached controls is harmless.
    switches.forEach((c, i) => (c.disabled = wasDisabled[i] ?? false));
    fields.forEach((f, i) => (f.readOnly = wasReadOnly[i] ?? false));
    // Disabling the focused button dropped the focus to the page: give it back.
    const lost = document.activeElement === null || document.activeElement === document.body;
    if (lost && focused !== null && focused.isConnected) focused.focus();
  }
}

export function button(label: string, testId: string, className = "secondary"): HTMLButtonElement {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = label;
  b.dataset.testid = testId;
  return b;
}
