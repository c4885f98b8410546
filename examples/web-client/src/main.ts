// The todo single-page app: plain DOM, one module.

import { Code } from "@connectrpc/connect";
import { setUpAccount } from "./account";
import { createApi } from "./api";
import { clearSession, loadSession, readConfig, SESSION_KEY, saveSession, type Session } from "./config";
import { explain, isSessionExpired, type Operation, type Problem } from "./errors";
import { busy, button, byId, clearFormProblem, clearNotice, showFormProblem, showNotice, type FormSlots } from "./ui";
import { LogoutScope, type LoginResponse } from "./gen/todo/auth/v1/auth_pb";
import { createLive, type LiveState } from "./live";
import { createRenewal } from "./renewal";
import type { Task } from "./gen/todo/task/v1/task_pb";

// ---------------------------------------------------------------------------------------------
// State

const config = readConfig(location.search);
let session: Session | null = loadSession(config.endpoints.auth);
const renewal = createRenewal(
  config.endpoints.auth,
  (refreshToken) => api.auth.refresh({ refreshToken }),
  () => session,
  adoptSession,
);
const api = createApi(config.endpoints, () => session?.accessToken ?? null, (stale) => renewal.renew(stale));
const live = createLive(api, () => session?.accessToken ?? null, (stale) => renewal.renew(stale), {
  current: liveCaughtUp,
  upserted: (task) => {
    known.set(task.id, task);
    if (liveCurrent) showRemote(task);
  },
  deleted: (id) => {
    known.delete(id);
    if (liveCurrent) hideRemote(id);
  },
  state: showLiveState,
  sessionEnded: (err) => reportFailure(err, "list"),
});

/** Bumped on every log-in and log-out: answers that arrive for an earlier session are dropped. */
let sessionEpoch = 0;
/** Bumped whenever the list is reloaded from the first page: stale pages are dropped. */
let listEpoch = 0;

/** The tasks on screen, by id; on screen they are in the server's order (newest first). */
const tasks = new Map<string, Task>();
let nextPageToken = "";
/** The last task of the last page loaded: tasks that sort after it are on pages not loaded yet. */
let lastLoaded: Task | null = null;
/**
 * Every task of the user as the live stream (WatchTasks) reports them, complete once the
 * stream has caught up (`liveCurrent`). The pages on screen are a window onto this: a change
 * made elsewhere shows up if it falls inside the pages loaded so far.
 */
const known = new Map<string, Task>();
let liveCurrent = false;
/** Whether the first page has arrived since the last (re)load. */
let listLoaded = false;
/** The task whose edit form is open, if any. */
let editingId: string | null = null;

// ---------------------------------------------------------------------------------------------
// Elements

const account = byId("account", HTMLDivElement);
const currentUser = byId("current-user", HTMLElement);
const logoutButton = byId("logout", HTMLButtonElement);
const logoutAllButton = byId("logout-all", HTMLButtonElement);
const loading = byId("loading", HTMLParagraphElement);
const liveStatus = byId("live-status", HTMLElement);

const authView = byId("auth-view", HTMLElement);
const authForm = byId("auth-form", HTMLFormElement);
const emailInput = byId("email", HTMLInputElement);
const passwordInput = byId("password", HTMLInputElement);

const tasksView = byId("tasks-view", HTMLElement);
const newTaskForm = byId("new-task-form", HTMLFormElement);
const newTitle = byId("new-title", HTMLInputElement);
const newDescription = byId("new-description", HTMLTextAreaElement);
const taskList = byId("task-list", HTMLUListElement);
const emptyState = byId("empty", HTMLParagraphElement);
const loadMoreButton = byId("load-more", HTMLButtonElement);

const authSlots: FormSlots = {
  fields: {
    email: { input: emailInput, error: byId("email-error", HTMLParagraphElement) },
    password: { input: passwordInput, error: byId("password-error", HTMLParagraphElement) },
  },
  formError: byId("auth-error", HTMLParagraphElement),
};

const newTaskSlots: FormSlots = {
  fields: {
    title: { input: newTitle, error: byId("new-title-error", HTMLParagraphElement) },
    description: { input: newDescription, error: byId("new-description-error", HTMLParagraphElement) },
  },
  formError: byId("new-task-error", HTMLParagraphElement),
};

// ---------------------------------------------------------------------------------------------
// Messages

/**
 * The one place failures are handled. An expired session always ends the session; otherwise
 * the problem goes into the form when there is one, or into the notice.
 */
function reportFailure(err: unknown, op: Operation, slots?: FormSlots): Problem | null {
  if (isSessionExpired(err, op)) {
    endSession("Your session expired, please log in again.", "error");
    return null;
  }
  const problem = explain(err, op, serviceOf(op));
  if (problem.code === Code.Canceled) return problem;
  if (slots !== undefined) {
    showFormProblem(slots, problem);
  } else {
    showNotice(problem.message, "error");
  }
  return problem;
}

function serviceOf(op: Operation): string {
  return op === "list" || op === "create" || op === "update" || op === "delete"
    ? `the task service at ${config.endpoints.tasks}`
    : `the auth service at ${config.endpoints.auth}`;
}

// ---------------------------------------------------------------------------------------------
// Views and session

function showAuthView(): void {
  loading.hidden = true;
  tasksView.hidden = true;
  account.hidden = true;
  authView.hidden = false;
}

function showTasksView(s: Session): void {
  loading.hidden = true;
  authView.hidden = true;
  currentUser.textContent = s.email;
  account.hidden = false;
  tasksView.hidden = false;
}

function beginSession(response: LoginResponse, typedEmail: string): void {
  const s: Session = {
    accessToken: response.accessToken,
    refreshToken: response.refreshToken,
    sessionId: response.sessionId,
    email: response.user?.email ?? typedEmail.trim().toLowerCase(),
    expiresAt: Date.now() + Number(response.expiresIn) * 1000,
    authUrl: config.endpoints.auth,
  };
  session = s;
  saveSession(s);
  renewal.schedule(s);
  sessionEpoch++;
  passwordInput.value = "";
  clearFormProblem(authSlots);
  clearFormProblem(newTaskSlots);
  showTasksView(s);
  newTitle.focus();
  followSession();
}

/** Loads the first page and starts the live stream for the session now in place. */
function followSession(): void {
  known.clear();
  liveCurrent = false;
  live.start();
  void reloadTasks();
}

/** A renewed token (from this tab or another): same session, same view. */
function adoptSession(s: Session): void {
  session = s;
  renewal.schedule(s);
  currentUser.textContent = s.email;
}

function endSession(message: string, kind: "info" | "error"): void {
  const email = session?.email;
  session = null;
  clearSession();
  renewal.schedule(null);
  live.stop();
  known.clear();
  liveCurrent = false;
  accountPanel.hide();
  sessionEpoch++;
  listEpoch++;
  resetList();
  newTaskForm.reset();
  clearFormProblem(newTaskSlots);
  clearFormProblem(authSlots);
  passwordInput.value = "";
  if (email !== undefined && emailInput.value === "") emailInput.value = email;
  showAuthView();
  showNotice(message, kind);
  (emailInput.value === "" ? emailInput : passwordInput).focus();
}

/** Checks the stored token with auth-service and refreshes the shown email. */
async function refreshCurrentUser(): Promise<void> {
  const epoch = sessionEpoch;
  try {
    const res = await api.auth.getCurrentUser({});
    if (epoch !== sessionEpoch || session === null || res.user === undefined) return;
    session = { ...session, email: res.user.email };
    saveSession(session);
    currentUser.textContent = session.email;
  } catch (err) {
    if (epoch !== sessionEpoch) return;
    // Only an invalid token matters here; other failures show up on the task calls too.
    if (isSessionExpired(err, "session")) reportFailure(err, "session");
  }
}

// ---------------------------------------------------------------------------------------------
// Task list

function resetList(): void {
  tasks.clear();
  taskList.replaceChildren();
  nextPageToken = "";
  lastLoaded = null;
  listLoaded = false;
  editingId = null;
  updateListChrome();
}

function updateListChrome(): void {
  emptyState.hidden = !listLoaded || tasks.size > 0 || nextPageToken !== "";
  loadMoreButton.hidden = nextPageToken === "";
}

/** Loads the first page again, replacing whatever is shown. */
async function reloadTasks(): Promise<void> {
  const epoch = sessionEpoch;
  const list = ++listEpoch;
  taskList.setAttribute("aria-busy", "true");
  try {
    const res = await api.tasks.listTasks({ pageSize: config.pageSize });
    if (epoch !== sessionEpoch || list !== listEpoch) return;
    resetList();
    res.tasks.forEach((t) => upsertTask(t));
    nextPageToken = res.nextPageToken;
    lastLoaded = res.tasks.at(-1) ?? null;
    listLoaded = true;
    reconcile();
  } catch (err) {
    if (epoch === sessionEpoch && list === listEpoch) reportFailure(err, "list");
  } finally {
    if (list === listEpoch) taskList.removeAttribute("aria-busy");
    updateListChrome();
  }
}

async function loadMore(): Promise<void> {
  if (nextPageToken === "") return;
  const epoch = sessionEpoch;
  const list = listEpoch;
  clearNotice();
  await busy(loadMoreButton.parentElement ?? loadMoreButton, async () => {
    try {
      const res = await api.tasks.listTasks({ pageSize: config.pageSize, pageToken: nextPageToken });
      if (epoch !== sessionEpoch || list !== listEpoch) return;
      res.tasks.forEach((t) => upsertTask(t));
      nextPageToken = res.nextPageToken;
      lastLoaded = res.tasks.at(-1) ?? lastLoaded;
      reconcile();
    } catch (err) {
      if (epoch === sessionEpoch && list === listEpoch) reportFailure(err, "list");
    }
  });
  updateListChrome();
  // The button was disabled while loading, which drops the focus: give it back if more remain.
  if (!loadMoreButton.hidden) loadMoreButton.focus();
}

function findItem(id: string): HTMLLIElement | null {
  return taskList.querySelector<HTMLLIElement>(`li[data-task-id="${CSS.escape(id)}"]`);
}

/** The server's order: newest first (by creation time, then id). True when `a` comes after `b`. */
function sortsAfter(a: Task, b: Task): boolean {
  const aSeconds = a.createTime?.seconds ?? 0n;
  const bSeconds = b.createTime?.seconds ?? 0n;
  if (aSeconds !== bSeconds) return aSeconds < bSeconds;
  const aNanos = a.createTime?.nanos ?? 0;
  const bNanos = b.createTime?.nanos ?? 0;
  if (aNanos !== bNanos) return aNanos < bNanos;
  return a.id < b.id;
}

/** Shows `task`: replaced in place if shown, else in the server's order. */
function upsertTask(task: Task): void {
  tasks.set(task.id, task);
  if (editingId === task.id) editingId = null;
  const item = renderTask(task);
  const old = findItem(task.id);
  if (old !== null) {
    old.replaceWith(item);
    return;
  }
  // Pages arrive in order, so the place is usually at the end: look from there.
  let before: Element | null = null;
  for (let el = taskList.lastElementChild; el !== null; el = el.previousElementSibling) {
    const shown = tasks.get((el as HTMLElement).dataset.taskId ?? "");
    if (shown !== undefined && !sortsAfter(shown, task)) break;
    before = el;
  }
  taskList.insertBefore(item, before);
}

/**
 * Takes `id` off the screen. `moveFocus`: the person deleted it here, so the focus goes to the
 * next task; otherwise the focus moves only if it was on the task that went away.
 */
function removeTask(id: string, moveFocus = true): void {
  tasks.delete(id);
  if (editingId === id) editingId = null;
  const item = findItem(id);
  const hadFocus = item !== null && item.contains(document.activeElement);
  // Keep the keyboard focus in the list: on the next task, else the previous, else the new-task form.
  const neighbour = (item?.nextElementSibling ?? item?.previousElementSibling) as HTMLElement | null;
  item?.remove();
  if (moveFocus || hadFocus) (neighbour?.querySelector<HTMLElement>("input, button") ?? newTitle).focus();
  updateListChrome();
  // The last shown task is gone but the server has more: show the next page right away.
  if (tasks.size === 0 && nextPageToken !== "") void loadMore();
}

// ---------------------------------------------------------------------------------------------
// Live changes (WatchTasks)

/**
 * The answer to this page's own create or update: shown at once, and known as the latest
 * version until the stream reports it (so a page arriving first does not take it away).
 */
function acknowledged(task: Task): void {
  if (liveCurrent) known.set(task.id, task);
  upsertTask(task);
}

/** Whether `task` belongs on the pages loaded so far. */
function inShownRange(task: Task): boolean {
  return listLoaded && (nextPageToken === "" || lastLoaded === null || !sortsAfter(task, lastLoaded));
}

/** A task created or changed elsewhere (or here: the stream reports every change). */
function showRemote(task: Task): void {
  if (editingId === task.id) {
    // The open form keeps the version it was opened on, so saving it is refused as changed
    // elsewhere (ABORTED) instead of silently overwriting this change.
    tasks.set(task.id, task);
    return;
  }
  if (!tasks.has(task.id) && !inShownRange(task)) return;
  upsertTask(task);
  updateListChrome();
}

/** A task deleted elsewhere. */
function hideRemote(id: string): void {
  const task = tasks.get(id);
  if (task === undefined) return;
  const wasEditing = editingId === id;
  removeTask(id, false);
  if (wasEditing) showNotice(`“${task.title}” was deleted elsewhere.`, "error");
}

/** The stream caught up: `all` is every task. Brings the pages on screen in line with it. */
function liveCaughtUp(all: Task[]): void {
  known.clear();
  all.forEach((t) => known.set(t.id, t));
  liveCurrent = true;
  reconcile();
}

/** Makes the screen agree with `known` (after the stream caught up, or a page arrived). */
function reconcile(): void {
  if (!liveCurrent || !listLoaded) return;
  for (const id of [...tasks.keys()]) {
    if (!known.has(id)) hideRemote(id);
  }
  for (const task of known.values()) {
    const shown = tasks.get(task.id);
    if (shown === undefined || shown.etag !== task.etag) showRemote(task);
  }
  updateListChrome();
}

const LIVE_LABELS: Record<LiveState, string> = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
};

function showLiveState(state: LiveState): void {
  liveStatus.dataset.state = state;
  liveStatus.textContent = LIVE_LABELS[state];
  liveStatus.title =
    state === "live"
      ? "Changes made on your other devices show up here as they happen."
      : "Changes made elsewhere show up once the connection is back.";
}

function renderTask(task: Task): HTMLLIElement {
  const item = document.createElement("li");
  item.className = "task";
  item.dataset.testid = "task-item";
  item.dataset.taskId = task.id;
  item.dataset.completed = String(task.completed);

  const checkbox = document.createElement("input");
  checkbox.type = "checkbox";
  checkbox.id = `done-${task.id}`;
  checkbox.checked = task.completed;
  checkbox.dataset.testid = "task-toggle";
  checkbox.addEventListener("change", () => void setCompleted(task.id, checkbox.checked));

  const body = document.createElement("div");
  body.className = "task-body";
  // The title is the checkbox's label: a screen reader reads "Buy milk, checkbox, checked".
  const title = document.createElement("label");
  title.className = "task-title";
  title.htmlFor = checkbox.id;
  title.textContent = task.title;
  title.dataset.testid = "task-title";
  body.append(title);
  if (task.description !== "") {
    const description = document.createElement("p");
    description.className = "task-description";
    description.textContent = task.description;
    description.dataset.testid = "task-description";
    body.append(description);
  }

  const actions = document.createElement("div");
  actions.className = "task-actions";
  const edit = button("Edit", "task-edit");
  edit.setAttribute("aria-label", `Edit “${task.title}”`);
  edit.addEventListener("click", () => startEditing(task.id));
  const remove = button("Delete", "task-delete", "danger");
  remove.setAttribute("aria-label", `Delete “${task.title}”`);
  remove.addEventListener("click", () => void deleteTask(task.id));
  actions.append(edit, remove);

  item.append(checkbox, body, actions);
  return item;
}

/** ABORTED (stale etag) and NOT_FOUND (deleted elsewhere) mean the list is out of date. */
function reloadIfStale(problem: Problem | null): void {
  if (problem?.code === Code.Aborted || problem?.code === Code.NotFound) void reloadTasks();
}

async function setCompleted(id: string, completed: boolean): Promise<void> {
  const task = tasks.get(id);
  const item = findItem(id);
  if (task === undefined || item === null) return;
  const epoch = sessionEpoch;
  clearNotice();
  await busy(item, async () => {
    try {
      // The etag makes the change conditional: ABORTED if someone changed the task meanwhile.
      const res = await api.tasks.updateTask({ id, completed, etag: task.etag });
      if (epoch !== sessionEpoch || res.task === undefined) return;
      acknowledged(res.task);
      findItem(id)?.querySelector("input")?.focus();
      showNotice(completed ? `Marked “${res.task.title}” as done.` : `Reopened “${res.task.title}”.`);
    } catch (err) {
      if (epoch !== sessionEpoch) return;
      const current = tasks.get(id);
      if (current !== undefined) upsertTask(current); // puts the checkbox back
      reloadIfStale(reportFailure(err, "update"));
    }
  });
}

async function deleteTask(id: string): Promise<void> {
  const task = tasks.get(id);
  const item = findItem(id);
  if (task === undefined || item === null) return;
  const epoch = sessionEpoch;
  clearNotice();
  await busy(item, async () => {
    try {
      await api.tasks.deleteTask({ id, etag: task.etag });
      if (epoch !== sessionEpoch) return;
      if (liveCurrent) known.delete(id);
      removeTask(id);
      showNotice(`Deleted “${task.title}”.`);
    } catch (err) {
      if (epoch !== sessionEpoch) return;
      reloadIfStale(reportFailure(err, "delete"));
    }
  });
}

function startEditing(id: string): void {
  const task = tasks.get(id);
  const item = findItem(id);
  if (task === undefined || item === null) return;
  if (editingId !== null && editingId !== id) stopEditing(editingId);
  editingId = id;
  clearNotice();

  const form = document.createElement("form");
  form.noValidate = true;
  form.dataset.testid = "edit-form";
  form.setAttribute("aria-label", `Edit “${task.title}”`);

  const field = (name: "title" | "description", label: string, control: HTMLInputElement | HTMLTextAreaElement) => {
    const wrap = document.createElement("div");
    wrap.className = "field";
    control.id = `edit-${name}-${id}`;
    control.name = name;
    control.dataset.testid = `edit-${name}`;
    const l = document.createElement("label");
    l.htmlFor = control.id;
    l.textContent = label;
    const error = document.createElement("p");
    error.className = "field-error";
    error.id = `${control.id}-error`;
    error.dataset.testid = `edit-${name}-error`;
    error.hidden = true;
    control.setAttribute("aria-describedby", error.id);
    wrap.append(l, control, error);
    return { wrap, slot: { input: control, error } };
  };

  const titleInput = document.createElement("input");
  titleInput.type = "text";
  titleInput.maxLength = 200;
  titleInput.value = task.title;
  const descriptionInput = document.createElement("textarea");
  descriptionInput.rows = 2;
  descriptionInput.value = task.description;
  const titleField = field("title", "Title", titleInput);
  const descriptionField = field("description", "Description", descriptionInput);

  const formError = document.createElement("p");
  formError.className = "form-error";
  formError.setAttribute("role", "alert");
  formError.dataset.testid = "edit-error";
  formError.hidden = true;

  const actions = document.createElement("div");
  actions.className = "actions";
  const save = button("Save", "edit-save", "");
  save.type = "submit";
  const cancel = button("Cancel", "edit-cancel");
  cancel.addEventListener("click", () => stopEditing(id));
  actions.append(save, cancel);

  form.append(titleField.wrap, descriptionField.wrap, formError, actions);
  form.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") stopEditing(id);
  });
  const slots: FormSlots = {
    fields: { title: titleField.slot, description: descriptionField.slot },
    formError,
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void saveEdit(task, form, slots, titleInput.value, descriptionInput.value);
  });

  item.replaceChildren(form);
  titleInput.focus();
  titleInput.select();
}

function stopEditing(id: string): void {
  const task = tasks.get(id);
  if (editingId === id) editingId = null;
  if (task === undefined) return;
  upsertTask(task);
  findItem(id)?.querySelector<HTMLButtonElement>('[data-testid="task-edit"]')?.focus();
}

/** Saves the form opened on `task` (that version, even if a newer one arrived meanwhile). */
async function saveEdit(task: Task, form: HTMLFormElement, slots: FormSlots, title: string, description: string): Promise<void> {
  const id = task.id;
  // UpdateTask changes only the fields that are present: send just what was edited.
  const changes: { title?: string; description?: string } = {};
  if (title !== task.title) changes.title = title;
  if (description !== task.description) changes.description = description;
  if (Object.keys(changes).length === 0) {
    stopEditing(id);
    return;
  }
  const epoch = sessionEpoch;
  clearNotice();
  clearFormProblem(slots);
  await busy(form, async () => {
    try {
      const res = await api.tasks.updateTask({ id, etag: task.etag, ...changes });
      if (epoch !== sessionEpoch || res.task === undefined) return;
      acknowledged(res.task);
      findItem(id)?.querySelector<HTMLButtonElement>('[data-testid="task-edit"]')?.focus();
      showNotice(`Saved “${res.task.title}”.`);
    } catch (err) {
      if (epoch !== sessionEpoch) return;
      const problem = explain(err, "update");
      if (problem.code === Code.Aborted || problem.code === Code.NotFound) {
        reloadIfStale(reportFailure(err, "update"));
      } else {
        reportFailure(err, "update", slots);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Forms

authForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const submitter = ev.submitter instanceof HTMLButtonElement ? ev.submitter : null;
  const action = submitter?.value === "signup" ? "signup" : "login";
  const email = emailInput.value;
  const password = passwordInput.value;
  clearNotice();
  clearFormProblem(authSlots);
  void busy(authForm, async () => {
    try {
      if (action === "signup") {
        const res = await api.auth.signUp({ email, password });
        showNotice(`Account created for ${res.user?.email ?? email}. You can log in now.`);
      } else {
        const res = await api.auth.login({ email, password });
        beginSession(res, email);
      }
    } catch (err) {
      reportFailure(err, action, authSlots);
    }
  });
});

newTaskForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const epoch = sessionEpoch;
  const title = newTitle.value;
  const description = newDescription.value;
  clearNotice();
  clearFormProblem(newTaskSlots);
  void busy(newTaskForm, async () => {
    try {
      const res = await api.tasks.createTask({ title, description });
      if (epoch !== sessionEpoch || res.task === undefined) return;
      acknowledged(res.task);
      updateListChrome();
      newTaskForm.reset();
      showNotice(`Added “${res.task.title}”.`);
    } catch (err) {
      if (epoch === sessionEpoch) reportFailure(err, "create", newTaskSlots);
    }
  }).then(() => {
    if (epoch === sessionEpoch && !tasksView.hidden) newTitle.focus();
  });
});

loadMoreButton.addEventListener("click", () => void loadMore());

/** Ends the session on the server (so its tokens stop working everywhere), then here. */
async function signOut(scope: LogoutScope, message: string): Promise<void> {
  clearNotice();
  const epoch = sessionEpoch;
  const header = logoutButton.parentElement ?? logoutButton;
  await busy(header, async () => {
    try {
      await api.auth.logout({ scope });
    } catch (err) {
      // Already ended on the server (revoked elsewhere, expired): signing out here is all
      // that is left. Anything else: say so, and still forget the tokens on this device.
      if (epoch !== sessionEpoch) return;
      if (!isSessionExpired(err, "logout")) {
        endSession(`Signed out on this device, but the server was not told: ${explain(err, "logout", serviceOf("logout")).message}`, "error");
        return;
      }
    }
    if (epoch === sessionEpoch) endSession(message, "info");
  });
}

logoutButton.addEventListener("click", () => void signOut(LogoutScope.CURRENT, "You are signed out."));
logoutAllButton.addEventListener("click", () => void signOut(LogoutScope.ALL, "You are signed out on every device."));

const accountPanel = setUpAccount({
  api,
  session: () => session,
  epoch: () => sessionEpoch,
  report: reportFailure,
  signedOut: (message) => endSession(message, "info"),
});

// Another tab renewed the tokens, signed in as someone else, or signed out.
window.addEventListener("storage", (ev) => {
  if (ev.key !== SESSION_KEY && ev.key !== null) return;
  const stored = loadSession(config.endpoints.auth);
  if (stored === null) {
    if (session !== null) endSession("You signed out in another tab.", "info");
  } else if (session !== null && stored.sessionId === session.sessionId) {
    adoptSession(stored);
  } else {
    // A different session: start over with it, as a reload would.
    session = stored;
    sessionEpoch++;
    renewal.schedule(stored);
    showTasksView(stored);
    followSession();
  }
});

// ---------------------------------------------------------------------------------------------
// Start

byId("auth-url", HTMLElement).textContent = config.endpoints.auth;
byId("tasks-url", HTMLElement).textContent = config.endpoints.tasks;

if (session !== null && session.expiresAt <= Date.now() && session.refreshToken === "") {
  endSession("Your session expired, please log in again.", "error");
} else if (session !== null) {
  // An expired access token is renewed by the first call (refused, then retried after Refresh).
  renewal.schedule(session);
  showTasksView(session);
  followSession();
  void refreshCurrentUser();
} else {
  showAuthView();
}
if (config.problems.length > 0) showNotice(config.problems.join(" "), "error");
