/**
 * The typed errors of mlup-storage.
 *
 * Every error is a `Schema.TaggedError`: it can be matched by its `_tag` with
 * `Effect.catchTag`, it carries the fields a caller needs to act on it, and its
 * `message` says what to fix.
 *
 * @since 0.1.0
 */
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import { cap } from "./internal/text.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("mlup-storage/StorageError")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * One problem found in a storage's options: the field (a dotted path into
 * `storage_kwargs`, or `storage_kwargs` itself) and what is wrong with it.
 *
 * @since 0.1.0
 * @category models
 */
export class OptionIssue extends Schema.Class<OptionIssue>("mlup-storage/OptionIssue")({
  field: Schema.String,
  problem: Schema.String
}) {}

/**
 * `storage_kwargs` (or the options given in code) did not pass validation.
 * Every problem found is listed, not only the first one.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidStorageOptions extends Schema.TaggedError<InvalidStorageOptions>(
  "mlup-storage/InvalidStorageOptions"
)("InvalidStorageOptions", {
  storageType: Schema.String,
  issues: Schema.Array(OptionIssue)
}) {
  /**
   * @since 0.1.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.1.0
   */
  override get message(): string {
    const issues = this.issues.map((issue) => `${cap(issue.field)}: ${cap(issue.problem)}`).join("; ")
    return `Invalid options for storage "${cap(this.storageType)}": ${issues}`
  }
}

/**
 * `storage_type` names no known storage, or names a module whose export is not
 * a storage definition.
 *
 * @since 0.1.0
 * @category errors
 */
export class UnknownStorageType extends Schema.TaggedError<UnknownStorageType>(
  "mlup-storage/UnknownStorageType"
)("UnknownStorageType", {
  storageType: Schema.String,
  known: Schema.Array(Schema.String),
  reason: Schema.optional(Schema.String),
  cause: Schema.optional(Schema.Defect)
}) {
  /**
   * @since 0.1.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.1.0
   */
  override get message(): string {
    const reason = this.reason === undefined ? "" : ` (${cap(this.reason)})`
    return `Unknown storage_type "${cap(this.storageType)}"${reason}. Known storage types: ${
      this.known.join(", ")
    }; a custom storage is named as "module-specifier#exportName"`
  }
}

/**
 * The path given to a storage does not exist.
 *
 * @since 0.1.0
 * @category errors
 */
export class PathNotFound extends Schema.TaggedError<PathNotFound>("mlup-storage/PathNotFound")("PathNotFound", {
  path: Schema.String,
  /**
   * The option that named the path, when one did (`path_to_files` for the
   * Disk storage): the message says to check it. A custom storage's own
   * paths name none, or their own.
   *
   * @since 0.5.0
   */
  option: Schema.optional(Schema.String)
}) {
  /**
   * @since 0.1.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.1.0
   */
  override get message(): string {
    return `No file or folder at ${cap(this.path)}${this.option === undefined ? "" : `: check ${cap(this.option)}`}`
  }
}

/**
 * `path_to_files` is a single file whose path does not match `file_mask`.
 *
 * @since 0.1.0
 * @category errors
 */
export class FileDoesNotMatchMask extends Schema.TaggedError<FileDoesNotMatchMask>(
  "mlup-storage/FileDoesNotMatchMask"
)("FileDoesNotMatchMask", {
  path: Schema.String,
  mask: Schema.String
}) {
  /**
   * @since 0.1.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.1.0
   */
  override get message(): string {
    return `The file ${cap(this.path)} does not match the mask /${cap(this.mask)}/ (searched in its path): change file_mask or path_to_files`
  }
}

/**
 * `path_to_files` is a folder in which no file name matches `file_mask`.
 * `names` holds the first few entries of the folder (sorted) and `entries`
 * how many there are in all.
 *
 * @since 0.1.0
 * @category errors
 */
export class NothingMatched extends Schema.TaggedError<NothingMatched>("mlup-storage/NothingMatched")(
  "NothingMatched",
  {
    folder: Schema.String,
    mask: Schema.String,
    names: Schema.Array(Schema.String),
    entries: Schema.Number
  }
) {
  /**
   * @since 0.1.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.1.0
   */
  override get message(): string {
    const shown = this.names.map((name) => cap(JSON.stringify(name))).join(", ")
    const more = this.entries > this.names.length ? `, and ${this.entries - this.names.length} more` : ""
    const there = this.entries === 0 ? "the folder is empty" : `it holds ${shown}${more}`
    return `No file in ${cap(this.folder)} matches the mask /${cap(this.mask)}/ (searched in each file name): ${there}`
  }
}

/**
 * The process may not read a path (EACCES / EPERM).
 *
 * @since 0.1.0
 * @category errors
 */
export class PermissionDenied extends Schema.TaggedError<PermissionDenied>("mlup-storage/PermissionDenied")(
  "PermissionDenied",
  {
    path: Schema.String,
    operation: Schema.String
  }
) {
  /**
   * @since 0.1.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.1.0
   */
  override get message(): string {
    return `Permission denied to ${cap(this.operation)} ${cap(this.path)}: give the process read access`
  }
}

/**
 * Any other failure while reading: an I/O error, a file that changed size
 * while it was read, a path that is neither a file nor a folder.
 *
 * @since 0.1.0
 * @category errors
 */
export class ReadFailed extends Schema.TaggedError<ReadFailed>("mlup-storage/ReadFailed")("ReadFailed", {
  path: Schema.String,
  operation: Schema.String,
  reason: Schema.String,
  code: Schema.optional(Schema.String),
  cause: Schema.optional(Schema.Defect)
}) {
  /**
   * @since 0.1.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.1.0
   */
  override get message(): string {
    const code = this.code === undefined ? "" : ` [${cap(this.code)}]`
    return `Could not ${cap(this.operation)} ${cap(this.path)}${code}: ${cap(this.reason)}`
  }
}

/**
 * The remote object does not exist: HTTP 404 or 410, a missing S3 key or
 * bucket. Not retried.
 *
 * @since 0.2.0
 * @category errors
 */
export class RemoteNotFound extends Schema.TaggedError<RemoteNotFound>("mlup-storage/RemoteNotFound")(
  "RemoteNotFound",
  {
    location: Schema.String,
    status: Schema.optional(Schema.Number),
    reason: Schema.optional(Schema.String)
  }
) {
  /**
   * @since 0.2.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.2.0
   */
  override get message(): string {
    const status = this.status === undefined ? "" : ` (HTTP ${this.status})`
    return `Not found: ${cap(this.location)}${status}${this.reason === undefined ? "" : `: ${cap(this.reason)}`}`
  }
}

/**
 * The server refused the credentials (HTTP 401 or 403, an unknown S3 access
 * key, a bad signature). Not retried.
 *
 * @since 0.2.0
 * @category errors
 */
export class Unauthorized extends Schema.TaggedError<Unauthorized>("mlup-storage/Unauthorized")("Unauthorized", {
  location: Schema.String,
  status: Schema.optional(Schema.Number),
  reason: Schema.optional(Schema.String)
}) {
  /**
   * @since 0.2.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.2.0
   */
  override get message(): string {
    const status = this.status === undefined ? "" : ` (HTTP ${this.status})`
    return `Access denied to ${cap(this.location)}${status}: check the credentials or headers${
      this.reason === undefined ? "" : ` (${cap(this.reason)})`
    }`
  }
}

/**
 * The server answered with a status that retrying cannot fix (a 4xx other
 * than 401, 403, 404, 408, 410, 429).
 *
 * @since 0.2.0
 * @category errors
 */
export class RequestRejected extends Schema.TaggedError<RequestRejected>("mlup-storage/RequestRejected")(
  "RequestRejected",
  {
    location: Schema.String,
    status: Schema.Number,
    reason: Schema.String
  }
) {
  /**
   * @since 0.2.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.2.0
   */
  override get message(): string {
    return `The server rejected the request for ${cap(this.location)} (HTTP ${this.status}): ${cap(this.reason)}`
  }
}

/**
 * A transient failure (connection error, connect timeout, an interrupted
 * body, 408, 429, 5xx) that persisted through every retry.
 *
 * @since 0.2.0
 * @category errors
 */
export class TransientFailure extends Schema.TaggedError<TransientFailure>("mlup-storage/TransientFailure")(
  "TransientFailure",
  {
    location: Schema.String,
    attempts: Schema.Number,
    reason: Schema.String,
    status: Schema.optional(Schema.Number)
  }
) {
  /**
   * @since 0.2.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.2.0
   */
  override get message(): string {
    return `Could not fetch ${cap(this.location)} after ${this.attempts} attempt(s): ${cap(this.reason)}`
  }
}

/**
 * The server sent no bytes for `seconds` (and still did not on the last
 * retry).
 *
 * @since 0.2.0
 * @category errors
 */
export class StallTimeout extends Schema.TaggedError<StallTimeout>("mlup-storage/StallTimeout")("StallTimeout", {
  location: Schema.String,
  seconds: Schema.Number,
  attempts: Schema.Number
}) {
  /**
   * @since 0.2.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.2.0
   */
  override get message(): string {
    return `The transfer of ${cap(this.location)} stalled: no bytes for ${this.seconds} s (${this.attempts} attempt(s))`
  }
}

/**
 * The downloaded file is not what was expected: its sha256 (or size, or S3
 * ETag) differs. The bad file has been removed from the cache.
 *
 * @since 0.2.0
 * @category errors
 */
export class ChecksumMismatch extends Schema.TaggedError<ChecksumMismatch>("mlup-storage/ChecksumMismatch")(
  "ChecksumMismatch",
  {
    location: Schema.String,
    algorithm: Schema.String,
    expected: Schema.String,
    actual: Schema.String
  }
) {
  /**
   * @since 0.2.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.2.0
   */
  override get message(): string {
    return `${cap(this.location)} failed verification: expected ${cap(this.algorithm)} ${cap(this.expected)}, got ${cap(this.actual)} (the file was removed)`
  }
}

/**
 * Offline mode, and the file is not in the cache.
 *
 * @since 0.2.0
 * @category errors
 */
export class NotCached extends Schema.TaggedError<NotCached>("mlup-storage/NotCached")("NotCached", {
  location: Schema.String,
  cacheDir: Schema.String
}) {
  /**
   * @since 0.2.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.2.0
   */
  override get message(): string {
    return `${cap(this.location)} is not in the cache ${cap(this.cacheDir)}, and the storage is offline: fetch it once online`
  }
}

/**
 * Writing into the cache failed (disk full, permissions, I/O error).
 *
 * @since 0.2.0
 * @category errors
 */
export class WriteFailed extends Schema.TaggedError<WriteFailed>("mlup-storage/WriteFailed")("WriteFailed", {
  path: Schema.String,
  operation: Schema.String,
  reason: Schema.String,
  code: Schema.optional(Schema.String),
  cause: Schema.optional(Schema.Defect)
}) {
  /**
   * @since 0.2.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.2.0
   */
  override get message(): string {
    const code = this.code === undefined ? "" : ` [${cap(this.code)}]`
    return `Could not ${cap(this.operation)} ${cap(this.path)}${code}: ${cap(this.reason)}`
  }
}

/**
 * Another process (or fiber) held the cache entry's lock for longer than
 * `lock_timeout`, and its heartbeat says it is alive. The holder is named.
 *
 * @since 0.4.0
 * @category errors
 */
export class LockTimeout extends Schema.TaggedError<LockTimeout>("mlup-storage/LockTimeout")("LockTimeout", {
  location: Schema.String,
  lockFile: Schema.String,
  holder: Schema.String,
  seconds: Schema.Number,
  /**
   * Whether the holder showed signs of life when the wait ended: a lock with
   * a holder that beats its heartbeat. `false` for a lock with no holder
   * written in it (empty: a process cut off as it took it) or whose
   * heartbeat stopped, which is taken over only once `staleAfterSeconds`
   * pass without a heartbeat: a `lock_timeout` shorter than that gave up
   * first.
   *
   * @since 0.5.0
   */
  alive: Schema.optional(Schema.Boolean),
  /** @since 0.5.0 */
  staleAfterSeconds: Schema.optional(Schema.Number)
}) {
  /**
   * @since 0.4.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.4.0
   */
  override get message(): string {
    if (this.alive === false) {
      return `Gave up after ${this.seconds} s waiting for the lock of ${cap(this.location)} (${cap(this.lockFile)}), ` +
        `held by ${cap(this.holder)}: it shows no sign of life, but a lock is taken over only after ` +
        `${this.staleAfterSeconds ?? 30} s without a heartbeat, longer than lock_timeout: raise lock_timeout above that, ` +
        `or remove the lock file if no process is fetching`
    }
    return `Gave up after ${this.seconds} s waiting for ${cap(this.holder)} to finish fetching ${cap(this.location)} ` +
      `(lock ${cap(this.lockFile)}): raise lock_timeout, or stop that process`
  }
}

/**
 * Not enough free space for a download whose size is known: checked before
 * any byte is written, so the disk is not filled with a partial file.
 *
 * @since 0.4.0
 * @category errors
 */
export class InsufficientSpace extends Schema.TaggedError<InsufficientSpace>("mlup-storage/InsufficientSpace")(
  "InsufficientSpace",
  {
    path: Schema.String,
    needed: Schema.Number,
    available: Schema.Number
  }
) {
  /**
   * @since 0.4.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.4.0
   */
  override get message(): string {
    const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`
    return `Not enough space in ${cap(this.path)}: ${this.needed} bytes (${mib(this.needed)}) are needed, ` +
      `${this.available} (${mib(this.available)}) are available: free some, or point cache_dir elsewhere`
  }
}

/**
 * The server's TLS certificate was not accepted (an unknown authority, a
 * self-signed or expired certificate, a name that does not match). Not
 * retried: another attempt gets the same certificate.
 *
 * @since 0.4.0
 * @category errors
 */
export class TlsFailure extends Schema.TaggedError<TlsFailure>("mlup-storage/TlsFailure")("TlsFailure", {
  location: Schema.String,
  code: Schema.String,
  reason: Schema.String
}) {
  /**
   * @since 0.4.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.4.0
   */
  override get message(): string {
    return `The TLS certificate of ${cap(this.location)} was not accepted (${cap(this.code)}: ${cap(this.reason)}). ` +
      "If your company's proxy or CA signs it, give that CA: ca_bundle, or SSL_CERT_FILE / AWS_CA_BUNDLE / " +
      "NODE_EXTRA_CA_CERTS (a PEM file)"
  }
}

/**
 * A load could not take the memory it needs from the `MemoryBudget`: the file
 * is larger than the whole budget (`waitedSeconds` absent: it can never fit),
 * or the budget stayed taken by other loads for longer than the budget's
 * timeout.
 *
 * @since 0.5.0
 * @category errors
 */
export class MemoryBudgetExceeded extends Schema.TaggedError<MemoryBudgetExceeded>(
  "mlup-storage/MemoryBudgetExceeded"
)("MemoryBudgetExceeded", {
  location: Schema.String,
  /** The bytes the load asked for. */
  bytes: Schema.Number,
  /** The whole budget, in bytes. */
  budget: Schema.Number,
  /** How long the load waited for other loads to give bytes back (absent: it was refused at once). */
  waitedSeconds: Schema.optional(Schema.Number)
}) {
  /**
   * @since 0.5.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.5.0
   */
  override get message(): string {
    const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`
    return this.waitedSeconds === undefined
      ? `${cap(this.location)} needs ${mib(this.bytes)} of memory, more than the whole memory budget ` +
        `(${mib(this.budget)}): raise the budget (MemoryBudget.layer), or load it by path (need_load_file: false)`
      : `Gave up after ${this.waitedSeconds} s waiting for ${mib(this.bytes)} of the memory budget ` +
        `(${mib(this.budget)}) for ${cap(this.location)}: other loads held it; raise the budget or its timeout, ` +
        `or load fewer models at once`
  }
}

/**
 * An archive was not unpacked: one of its entries broke a rule of safe
 * unpacking (an absolute or `..` name, a link out of the tree, a device, a
 * name given twice, …), or it reached a limit (`limit` names the option that
 * raises it: `unpack_max_entries`, `unpack_max_bytes`, `unpack_max_ratio`).
 * Nothing of it was left on disk. See docs/unpack.md.
 *
 * @since 0.5.0
 * @category errors
 */
export class ArchiveRefused extends Schema.TaggedError<ArchiveRefused>("mlup-storage/ArchiveRefused")(
  "ArchiveRefused",
  {
    /** The archive. */
    location: Schema.String,
    /** The entry refused, as the archive names it (absent: the archive as a whole, a ratio). */
    entry: Schema.optional(Schema.String),
    /** The rule it broke: "absolute name", "parent reference", "link outside the tree", "ratio", … */
    rule: Schema.String,
    reason: Schema.String,
    /** The option that raises the limit reached. */
    limit: Schema.optional(Schema.Literal("unpack_max_entries", "unpack_max_bytes", "unpack_max_ratio"))
  }
) {
  /**
   * @since 0.5.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.5.0
   */
  override get message(): string {
    const entry = this.entry === undefined ? "" : ` (${cap(this.entry)})`
    const raise = this.limit === undefined ? "" : `; raise ${this.limit} if the archive is trusted`
    return `Refused to unpack ${cap(this.location)}${entry}: ${cap(this.reason)} [${this.rule}]${raise}`
  }
}

/**
 * An archive could not be read: it is not of the format its name (or
 * `unpack`) says, it is damaged or cut short, or it uses a feature that is
 * not supported (an encrypted zip entry, a compression other than deflate).
 * Nothing of it was left on disk.
 *
 * @since 0.5.0
 * @category errors
 */
export class ArchiveUnreadable extends Schema.TaggedError<ArchiveUnreadable>("mlup-storage/ArchiveUnreadable")(
  "ArchiveUnreadable",
  {
    location: Schema.String,
    /** The format it was read as: "tar" (plain or gzip) or "zip". */
    format: Schema.String,
    reason: Schema.String
  }
) {
  /**
   * @since 0.5.0
   */
  readonly [TypeId]: TypeId = TypeId

  /**
   * @since 0.5.0
   */
  override get message(): string {
    return `Could not unpack ${cap(this.location)} as ${this.format}: ${cap(this.reason)}`
  }
}

/**
 * Every error a storage can fail with.
 *
 * @since 0.1.0
 * @category models
 */
export type StorageError =
  | InvalidStorageOptions
  | UnknownStorageType
  | PathNotFound
  | FileDoesNotMatchMask
  | NothingMatched
  | PermissionDenied
  | ReadFailed
  | RemoteNotFound
  | Unauthorized
  | RequestRejected
  | TransientFailure
  | StallTimeout
  | ChecksumMismatch
  | NotCached
  | WriteFailed
  | LockTimeout
  | InsufficientSpace
  | TlsFailure
  | MemoryBudgetExceeded
  | ArchiveRefused
  | ArchiveUnreadable

/**
 * The schema of every storage error, to encode or decode them (for example
 * across a worker boundary).
 *
 * @since 0.1.0
 * @category schemas
 */
export const StorageError: Schema.Union<[
  typeof InvalidStorageOptions,
  typeof UnknownStorageType,
  typeof PathNotFound,
  typeof FileDoesNotMatchMask,
  typeof NothingMatched,
  typeof PermissionDenied,
  typeof ReadFailed,
  typeof RemoteNotFound,
  typeof Unauthorized,
  typeof RequestRejected,
  typeof TransientFailure,
  typeof StallTimeout,
  typeof ChecksumMismatch,
  typeof NotCached,
  typeof WriteFailed,
  typeof LockTimeout,
  typeof InsufficientSpace,
  typeof TlsFailure,
  typeof MemoryBudgetExceeded,
  typeof ArchiveRefused,
  typeof ArchiveUnreadable
]> = Schema.Union(
  InvalidStorageOptions,
  UnknownStorageType,
  PathNotFound,
  FileDoesNotMatchMask,
  NothingMatched,
  PermissionDenied,
  ReadFailed,
  RemoteNotFound,
  Unauthorized,
  RequestRejected,
  TransientFailure,
  StallTimeout,
  ChecksumMismatch,
  NotCached,
  WriteFailed,
  LockTimeout,
  InsufficientSpace,
  TlsFailure,
  MemoryBudgetExceeded,
  ArchiveRefused,
  ArchiveUnreadable
)

/**
 * @since 0.1.0
 * @category refinements
 */
export const isStorageError = (u: unknown): u is StorageError => Predicate.hasProperty(u, TypeId)
