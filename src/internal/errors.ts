import type * as PlatformError from "@effect/platform/Error"
import * as Effect from "effect/Effect"
import * as ParseResult from "effect/ParseResult"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import * as StorageError from "../StorageError.js"
import { cap } from "./text.js"

export { cap }

/**
 * The one place where native (Node) error codes, as @effect/platform reports
 * them, become the library's typed errors.
 *
 * @internal
 */
export const fromPlatformError = (path: string, operation: string, option?: string) =>
(
  error: PlatformError.PlatformError
): StorageError.PathNotFound | StorageError.PermissionDenied | StorageError.ReadFailed => {
  const code = nativeCode(error.cause)
  if (error._tag === "SystemError") {
    // ENOTDIR: a component of the path is a file, so the path does not exist.
    if (error.reason === "NotFound" || code === "ENOTDIR") {
      return new StorageError.PathNotFound({ path, ...(option === undefined ? {} : { option }) })
    }
    if (error.reason === "PermissionDenied" || code === "EPERM" || code === "EACCES") {
      return new StorageError.PermissionDenied({ path, operation })
    }
  }
  return new StorageError.ReadFailed({
    path,
    operation,
    reason: reasonFor(code) ?? error.description ?? error.message,
    ...(code === undefined ? {} : { code }),
    cause: error
  })
}

const nativeCode = (cause: unknown): string | undefined =>
  Predicate.hasProperty(cause, "code") && typeof cause.code === "string" ? cause.code : undefined

const reasonFor = (code: string | undefined): string | undefined => {
  switch (code) {
    case "ELOOP":
      return "too many levels of symbolic links (a link loop)"
    case "EISDIR":
      return "it is a folder, not a file"
    case "EMFILE":
    case "ENFILE":
      return "too many open files: raise the limit (ulimit -n) or load fewer files at once"
    case "EIO":
      return "input/output error from the device"
    case "ENAMETOOLONG":
      return "the path is too long"
    default:
      return undefined
  }
}

/**
 * A Schema parse error as `InvalidStorageOptions`: one issue per problem, each
 * naming the field. The offending value is never printed (it may be a secret);
 * only its type is.
 *
 * @internal
 */
export const fromParseError = (storageType: string, input: unknown) =>
(
  error: ParseResult.ParseError
): StorageError.InvalidStorageOptions =>
{
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) =>
    new StorageError.OptionIssue({
      field: issue.path.length === 0 ? "storage_kwargs" : issue.path.map(String).join("."),
      problem: withoutValue(issue.message, valueAt(input, issue.path))
    })
  )
  // An optional field that failed reports its "undefined" alternative too: that one says nothing;
  // a union of literals reports one issue per member, with the same message: one is enough.
  const seen = new Set<string>()
  const useful = issues.filter((issue) =>
    (!issue.problem.startsWith("Expected undefined") ||
      !issues.some((other) => other !== issue && other.field === issue.field)) &&
    !seen.has(`${issue.field}\0${issue.problem}`) && seen.add(`${issue.field}\0${issue.problem}`) !== undefined
  )
  return new StorageError.InvalidStorageOptions({ storageType, issues: useful })
}

/**
 * Options given in code, decoded with the storage's kwargs schema: `kwargs`
 * holds them under their kwargs names (snake_case; undefined ones are left
 * out), and each issue names the field as the caller wrote it (camelCase).
 *
 * @internal
 */
export const decodeOptionsInCode = <A, I>(
  storageType: string,
  schema: Schema.Schema<A, I>,
  kwargs: Record<string, unknown>
): Effect.Effect<A, StorageError.InvalidStorageOptions> => {
  const input = Object.fromEntries(Object.entries(kwargs).filter(([, value]) => value !== undefined))
  const inCode = (field: string) =>
    field === "storage_kwargs"
      ? field
      : field.replace(/^[a-z0-9_]+/, (name) => name.replace(/_([a-z0-9])/g, (_, letter: string) => letter.toUpperCase()))
  return Schema.decodeUnknown(schema, { errors: "all", onExcessProperty: "error" })(input).pipe(
    Effect.mapError((error) => {
      const failure = fromParseError(storageType, input)(error)
      return new StorageError.InvalidStorageOptions({
        storageType,
        issues: failure.issues.map((issue) =>
          new StorageError.OptionIssue({ field: inCode(issue.field), problem: issue.problem })
        )
      })
    })
  )
}

const valueAt = (input: unknown, path: ReadonlyArray<PropertyKey>): unknown => {
  let value = input
  for (const key of path) {
    if (!Predicate.isObject(value)) return undefined
    value = (value as any)[key]
  }
  return value
}

const describe = (value: unknown): string =>
  value === null ? "null" : Array.isArray(value) ? "an array" : `a value of type ${typeof value}`

const withoutValue = (message: string, value: unknown): string => {
  const at = message.indexOf(", actual ")
  return at === -1 ? message : `${message.slice(0, at)}, got ${describe(value)}`
}

/**
 * A failed write into the cache, from the platform's error.
 *
 * @internal
 */
export const writeFailed = (path: string, operation: string, where: "cache" | "target" = "cache") =>
(
  // A platform error, or Node's own (the cache's synchronous calls).
  error: PlatformError.PlatformError | unknown
): StorageError.WriteFailed => {
  const platform = Predicate.hasProperty(error, "_tag") && (error._tag === "SystemError" || error._tag === "BadArgument")
  const code = nativeCode(platform ? (error as PlatformError.PlatformError).cause : error)
  const fallback = platform
    ? (error as PlatformError.PlatformError).description ?? (error as PlatformError.PlatformError).message
    : error instanceof Error
    ? error.message
    : String(error)
  return new StorageError.WriteFailed({
    path,
    operation,
    reason: writeReasonFor(code, where) ?? fallback,
    ...(code === undefined ? {} : { code }),
    cause: error
  })
}

const writeReasonFor = (code: string | undefined, where: "cache" | "target"): string | undefined => {
  // The fix names the folder that was being written: the cache's (cache_dir) or the target's (--to).
  const elsewhere = where === "cache" ? "point cache_dir at" : "choose"
  switch (code) {
    case "ENOSPC":
      return `no space left on the device: free some, or ${elsewhere} another folder`
    case "EDQUOT":
      return "the disk quota is exhausted"
    case "EROFS":
      return `the file system is read-only: ${elsewhere} a writable folder`
    case "EACCES":
    case "EPERM":
      return `permission denied: ${elsewhere} a folder this process may write, or fix its permissions`
    default:
      return reasonFor(code)
  }
}

/** Query parameters whose values are secrets: signatures, credentials, tokens, keys (presigned S3, GCS, Azure SAS). */
const secretParameter = /sig|signature|credential|token|key|secret|password|passwd|auth/i

/**
 * A URL as it may be shown: credentials (`user:pass@`) and the values of
 * secret query parameters (presigned S3 / GCS URLs, Azure SAS, tokens) are
 * replaced by `REDACTED`. Anything that is not a URL is returned as is.
 *
 * @internal
 */
export const redactUrl = (text: string): string => {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    // Not a URL, but it may still carry credentials (a malformed proxy URL, say).
    // (A password may hold "/", which is why the URL did not parse.)
    return text.replace(/(\/\/)[^@\s]*@/, "$1REDACTED@")
  }
  let changed = false
  if (url.username !== "" || url.password !== "") {
    url.username = "REDACTED"
    url.password = ""
    changed = true
  }
  for (const name of [...new Set(url.searchParams.keys())]) {
    if (secretParameter.test(name)) {
      url.searchParams.set(name, "REDACTED")
      changed = true
    }
  }
  return changed ? url.href : text
}

/**
 * Text with every URL in it redacted (see `redactUrl`): the last guard before
 * a message, a log line or JSON output leaves the process.
 *
 * @internal
 */
export const redactText = (text: string): string =>
  text.replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>]+/gi, (match) => {
    // Trailing punctuation belongs to the sentence, not the URL.
    const trail = /[),.;:\]]+$/.exec(match)?.[0] ?? ""
    return redactUrl(match.slice(0, match.length - trail.length)) + trail
  })
