// The account panel: the signed-in devices (sessions) with "Revoke", password change and
// account deletion.

import type { Api } from "./api";
import type { Session } from "./config";
import type { Operation, Problem } from "./errors";
import type { Session as ServerSession } from "./gen/todo/auth/v1/auth_pb";
import { busy, button, byId, clearFormProblem, clearNotice, showNotice, type FormSlots } from "./ui";

export interface AccountContext {
  api: Api;
  session: () => Session | null;
  /** Bumped on every sign-in and sign-out: answers for an earlier session are dropped. */
  epoch: () => number;
  report: (err: unknown, op: Operation, slots?: FormSlots) => Problem | null;
  /** Ends the session on this device with an info notice. */
  signedOut: (message: string) => void;
}

export interface AccountPanel {
  show(): void;
  hide(): void;
  toggle(): void;
}

const view = byId("account-view", HTMLElement);
const toggleButton = byId("account-toggle", HTMLButtonElement);
const sessionList = byId("session-list", HTMLUListElement);
const passwordForm = byId("password-form", HTMLFormElement);
const currentPassword = byId("current-password", HTMLInputElement);
const newPassword = byId("new-password", HTMLInputElement);
const deleteForm = byId("delete-account-form", HTMLFormElement);
const deletePassword = byId("delete-password", HTMLInputElement);

const passwordSlots: FormSlots = {
  fields: {
    current_password: { input: currentPassword, error: byId("current-password-error", HTMLParagraphElement) },
    new_password: { input: newPassword, error: byId("new-password-error", HTMLParagraphElement) },
  },
  formError: byId("password-form-error", HTMLParagraphElement),
};

const deleteSlots: FormSlots = {
  fields: { password: { input: deletePassword, error: byId("delete-password-error", HTMLParagraphElement) } },
  formError: byId("delete-form-error", HTMLParagraphElement),
};

function when(t: { seconds: bigint; nanos: number } | undefined): string {
  if (t === undefined) return "unknown";
  return new Date(Number(t.seconds) * 1000 + t.nanos / 1e6).toLocaleString();
}

export function setUpAccount(ctx: AccountContext): AccountPanel {
  const renderSession = (s: ServerSession): HTMLLIElement => {
    const item = document.createElement("li");
    item.className = "session";
    item.dataset.testid = "session-item";
    item.dataset.sessionId = s.id;
    item.dataset.current = String(s.current);
    const body = document.createElement("div");
    const name = document.createElement("strong");
    name.textContent = s.current ? "This device" : s.userAgent || "Unknown device";
    name.dataset.testid = "session-name";
    const times = document.createElement("p");
    times.className = "muted";
    times.textContent = `Signed in ${when(s.createTime)} · last active ${when(s.lastUseTime)}`;
    body.append(name, times);
    item.append(body);
    if (!s.current) {
      const revoke = button("Revoke", "session-revoke", "danger");
      revoke.setAttribute("aria-label", `Sign out ${name.textContent}`);
      revoke.addEventListener("click", () => void revokeSession(s.id, item));
      item.append(revoke);
    }
    return item;
  };

  const loadSessions = async (): Promise<void> => {
    const epoch = ctx.epoch();
    sessionList.setAttribute("aria-busy", "true");
    try {
      const res = await ctx.api.auth.listSessions({});
      if (epoch !== ctx.epoch()) return;
      sessionList.replaceChildren(...res.sessions.map(renderSession));
    } catch (err) {
      if (epoch === ctx.epoch()) ctx.report(err, "sessions");
    } finally {
      sessionList.removeAttribute("aria-busy");
    }
  };

  const revokeSession = async (id: string, item: HTMLLIElement): Promise<void> => {
    const epoch = ctx.epoch();
    clearNotice();
    await busy(item, async () => {
      try {
        await ctx.api.auth.revokeSession({ id });
        if (epoch !== ctx.epoch()) return;
        showNotice("That device is signed out.");
      } catch (err) {
        if (epoch === ctx.epoch()) ctx.report(err, "revoke");
      }
    });
    if (epoch === ctx.epoch()) await loadSessions();
  };

  passwordForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const epoch = ctx.epoch();
    clearNotice();
    clearFormProblem(passwordSlots);
    void busy(passwordForm, async () => {
      try {
        const res = await ctx.api.auth.changePassword({
          currentPassword: currentPassword.value,
          newPassword: newPassword.value,
        });
        if (epoch !== ctx.epoch()) return;
        passwordForm.reset();
        const others = res.revokedSessions === 1 ? "1 other device was" : `${res.revokedSessions} other devices were`;
        showNotice(`Password changed. ${others} signed out.`);
        await loadSessions();
      } catch (err) {
        if (epoch === ctx.epoch()) ctx.report(err, "password", passwordSlots);
      }
    });
  });

  deleteForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const epoch = ctx.epoch();
    clearNotice();
    clearFormProblem(deleteSlots);
    void busy(deleteForm, async () => {
      try {
        await ctx.api.auth.deleteAccount({ password: deletePassword.value });
        if (epoch !== ctx.epoch()) return;
        deleteForm.reset();
        ctx.signedOut("Your account and all its tasks were deleted.");
      } catch (err) {
        if (epoch === ctx.epoch()) ctx.report(err, "delete-account", deleteSlots);
      }
    });
  });

  const hide = (): void => {
    view.hidden = true;
    toggleButton.setAttribute("aria-expanded", "false");
    passwordForm.reset();
    deleteForm.reset();
    clearFormProblem(passwordSlots);
    clearFormProblem(deleteSlots);
    sessionList.replaceChildren();
  };
  const show = (): void => {
    if (ctx.session() === null) return;
    view.hidden = false;
    toggleButton.setAttribute("aria-expanded", "true");
    void loadSessions();
  };
  toggleButton.addEventListener("click", () => (view.hidden ? show() : hide()));
  return { show, hide, toggle: () => (view.hidden ? show() : hide()) };
}
