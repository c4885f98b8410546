// Turns gRPC errors into words for people.
//
// The services put a google.rpc.BadRequest (one violation per bad field) or a google.rpc.RetryInfo
// in the `grpc-status-details-bin` trailer; ConnectError.findDetails decodes them.

import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, RequestInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb";

/** What the call was, so the same status can be explained in the right words. */
export type Operation =
  | "signup"
  | "login"
  | "session"
  | "list"
  | "create"
  | "update"
  | "delete"
  | "logout"
  | "sessions"
  | "revoke"
  | "password"
  | "delete-account";

/** The server's message for a wrong password on ChangePassword and DeleteAccount. */
const WRONG_PASSWORD = "the password is incorrect";

/** UNAUTHENTICATED that means a wrong password typed now, not a session that ended. */
function isWrongPassword(err: ConnectError, op: Operation): boolean {
  return (op === "password" || op === "delete-account") && err.rawMessage === WRONG_PASSWORD;
}

export interface Problem {
  /** The gRPC status code, or null when the error did not come from a call. */
  code: Code | null;
  /** One sentence for the person. */
  message: string;
  /** Field name (as in the proto, e.g. "email") → what is wrong with it. */
  fields: Map<string, string>;
}

/** `service` names the service that was called (its URL), for "cannot reach" messages. */
export function explain(err: unknown, op: Operation, service = "the service"): Problem {
  if (!(err instanceof ConnectError)) {
    return { code: null, message: `Something went wrong: ${String(err)}`, fields: new Map() };
  }
  const fields = fieldViolations(err);
  return { code: err.code, message: sentence(err, op, fields, service), fields };
}

/** True when the error means the stored token is no good any more. */
export function isSessionExpired(err: unknown, op: Operation): boolean {
  // At login, UNAUTHENTICATED means wrong credentials, not an expired session; so does a wrong
  // password on ChangePassword and DeleteAccount.
  return (
    err instanceof ConnectError && err.code === Code.Unauthenticated && op !== "login" && !isWrongPassword(err, op)
  );
}

function sentence(err: ConnectError, op: Operation, fields: Map<string, string>, service: string): string {
  switch (err.code) {
    case Code.InvalidArgument:
      return fields.size > 0
        ? `Please correct: ${[...fields].map(([field, description]) => `${field}: ${description}`).join("; ")}.`
        : `The request was refused: ${err.rawMessage}`;
    case Code.AlreadyExists:
      return op === "signup"
        ? "An account with this email already exists. Log in instead, or use another email."
        : `This already exists: ${err.rawMessage}`;
    case Code.Unauthenticated:
      if (isWrongPassword(err, op)) return "The password is wrong.";
      return op === "login" ? "Wrong email or password." : "Your session expired, please log in again.";
    case Code.NotFound:
      if (op === "revoke") return "This session had already ended. The list has been reloaded.";
      return "This task no longer exists (it was probably deleted elsewhere). The list has been reloaded.";
    case Code.Aborted:
      return "This task was changed elsewhere in the meantime, so nothing was changed. The list has been reloaded; please try again.";
    case Code.Unavailable:
    case Code.ResourceExhausted:
    case Code.DeadlineExceeded: {
      const seconds = retryDelaySeconds(err);
      return seconds === null
        ? "The service is busy, try again in a moment."
        : `The service is busy, try again in ${seconds} second${seconds === 1 ? "" : "s"}.`;
    }
    case Code.Unknown:
      if (err.cause instanceof TypeError) {
        // fetch() itself failed: nothing listens there, or CORS refused this page's origin.
        return `Cannot reach ${service}. Check that it is running and allows this page's origin (CORS).`;
      }
      return `Something went wrong: ${err.rawMessage}${reference(err)}`;
    case Code.Canceled:
      return "The request was cancelled.";
    default:
      return `Something went wrong (${Code[err.code]}): ${err.rawMessage}${reference(err)}`;
  }
}

/**
 * " (reference: <request id>)" for failures on the server's side: the id the services put in
 * every error (google.rpc.RequestInfo), which finds the call in their logs.
 */
export function reference(err: ConnectError): string {
  const id = err.findDetails(RequestInfoSchema)[0]?.requestId ?? err.metadata.get("x-request-id");
  return id ? ` (reference: ${id})` : "";
}

/** The field violations of a google.rpc.BadRequest detail, in the order the server gave them. */
export function fieldViolations(err: ConnectError): Map<string, string> {
  const fields = new Map<string, string>();
  for (const bad of err.findDetails(BadRequestSchema)) {
    for (const v of bad.fieldViolations) {
      const previous = fields.get(v.field);
      fields.set(v.field, previous === undefined ? v.description : `${previous}; ${v.description}`);
    }
  }
  return fields;
}

/** The server's suggested wait from a google.rpc.RetryInfo detail, rounded up to seconds. */
export function retryDelaySeconds(err: ConnectError): number | null {
  for (const info of err.findDetails(RetryInfoSchema)) {
    const d = info.retryDelay;
    if (d !== undefined) {
      const ms = Number(d.seconds) * 1000 + d.nanos / 1e6;
      return Math.max(1, Math.ceil(ms / 1000));
    }
  }
  return null;
}
