import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as crypto from "node:crypto"
import * as LoadedFile from "../LoadedFile.js"
import * as StorageError from "../StorageError.js"
import * as cache from "./cache.js"
import * as errors from "./errors.js"
import * as mask_ from "./mask.js"
import type * as options_ from "./options.js"
import * as nodeDrain from "./nodeDrain.js"
import * as release from "./release.js"
import * as transfer from "./transfer.js"

/**
 * One object of a remote set, as its source lists it: its key, size and
 * version (an ETag, or any string that changes with the content), and the
 * digests of the whole object the source vouches for, when it has them.
 *
 * @internal
 */
export interface Listed {
  readonly key: string
  readonly size: number
  /** The version: an object with the same version is the same object (not fetched again). */
  readonly etag: string
  /** Digests of the whole object the source vouches for, each checked when the object is fetched. */
  readonly checks?: ReadonlyArray<Check> | undefined
  /** The name it is delivered under, for a source whose listing names its files (`Source.named`). */
  readonly name?: string | undefined
  /** Whether ranges of it can be read (false: one whole read, never parts). Default true. */
  readonly ranged?: boolean | undefined
}

/**
 * A digest of a whole object: `algorithm` (a node:crypto hash) over
 * `preamble` then the object's bytes (git's blob ids hash a header first),
 * shown in errors as `label`.
 *
 * @internal
 */
export interface Check {
  readonly algorithm: string
  readonly expected: string
  readonly label: string
  readonly preamble?: string | undefined
}

/**
 * A body a source sends back for one object (or a range of it): a Node stream
 * (the fast path) or any async iterable of bytes, and the version it carries.
 *
 * @internal
 */
export interface Got {
  readonly body: unknown
  /** The version the answer carries, checked against the listed one (undefined: not checked). */
  readonly etag: string | undefined
  /**
   * For a ranged read, the bytes the answer holds, [start, end), from its
   * Content-Range (undefined: the range asked for). A server may answer a
   * shorter range than the one asked for: the engine asks again for the rest.
   */
  readonly range?: { readonly start: number | undefined; readonly end: number | undefined } | undefined
  /**
   * The digests of the whole object that this answer vouches for, in place of
   * the listing's (undefined: the listing's hold). A listing may not tell what
   * only an answer does: an S3 ETag is an MD5 only when the object is not
   * encrypted with KMS or a customer's key, which only its GET says.
   */
  readonly checks?: ReadonlyArray<Check> | undefined
}

/**
 * What a remote source supplies to the engine: a client for one load, a
 * listing, and (ranged) reads pinned to a listed version. Everything else
 * (selection, staging, verification, resume, lock, snapshots, offline) is
 * the engine's, the same for every source.
 *
 * @internal
 */
export interface Source<C> {
  /** The storage's name, in errors. */
  readonly storageType: string
  /** The cache's folder for this source (`s3`, `azure`, `hf`), and what keys the entry in it. */
  readonly folder: string
  readonly cacheKey: ReadonlyArray<string>
  /** Where a key is, in messages, logs and progress (`s3://bucket/key`). */
  readonly locationOf: (key: string) => string
  /** A key (a single file) or a folder of keys; "" for all. */
  readonly prefix: string
  readonly mask: RegExp
  /** How the mask is shown in errors (default: its source). */
  readonly maskShown?: string | undefined
  /**
   * A selection of the source's own besides the mask (the Hub's
   * allow/ignore patterns), on the whole key: applied online and offline.
   */
  readonly keep?: ((key: string) => boolean) | undefined
  readonly maskField: string
  /**
   * The listing is the selection: each entry named (`Listed.name`), in the
   * order to deliver, with no prefix or mask (the HTTP storage's URLs).
   */
  readonly named?: boolean | undefined
  /** What an empty listing means (RemoteNotFound's reason). */
  readonly nothingListed: string
  readonly connect: Effect.Effect<C, StorageError.StorageError, Scope.Scope>
  readonly list: (client: C) => Effect.Effect<ReadonlyArray<Listed>, StorageError.StorageError | transfer.Retryable>
  /** One GET of the object, or of [start, end) of it, pinned to its listed version where the source can. */
  readonly get: (
    client: C,
    entry: Listed,
    range: { readonly start: number; readonly end: number } | undefined
  ) => Effect.Effect<Got, StorageError.StorageError | transfer.Retryable, Scope.Scope>
}

/** @internal */
export interface Settings {
  readonly cacheDir: string
  readonly concurrency: number
  readonly partSize: number
  readonly partConcurrency: number
  readonly multipartThreshold: number
  readonly stallTimeout: Duration.Duration
  readonly schedule: Schedule.Schedule<unknown, transfer.Retryable>
  readonly maxRetryAfter: Duration.Duration
  readonly offline: boolean
  readonly lockTimeout: Duration.Duration
  readonly verify: cache.VerifyMode
  /** false: nothing is written to the cache folder (the memory sink's loads); default true. */
  readonly cache?: boolean | undefined
}

/**
 * The engine's settings from the options every remote storage shares (one
 * place for their units and defaults), the retry policy given in code
 * replacing `retries`.
 *
 * @internal
 */
export const settingsOf = (
  kwargs: options_.TransferKwargs & { readonly offline?: boolean | undefined },
  retrySchedule: Schedule.Schedule<unknown, unknown> | undefined
): Effect.Effect<Settings, never, Path.Path> =>
  Effect.gen(function*() {
    const path = yield* Path.Path
    return {
      cacheDir: path.resolve(kwargs.cache_dir ?? (yield* cache.defaultCacheDir(path))),
      concurrency: kwargs.concurrency,
      partSize: kwargs.part_size_mb * MiB,
      partConcurrency: kwargs.part_concurrency,
      multipartThreshold: kwargs.multipart_threshold_mb * MiB,
      stallTimeout: Duration.seconds(kwargs.stall_timeout),
      schedule: retrySchedule ?? transfer.defaultSchedule(kwargs.retries),
      maxRetryAfter: Duration.minutes(1),
      offline: kwargs.offline ?? false,
      lockTimeout: Duration.seconds(kwargs.lock_timeout),
      verify: kwargs.verify,
      cache: kwargs.cache
    }
  })

const MiB = 1024 * 1024

/** One object of a snapshot: where it came from and what it was. */
interface Entry extends Listed {
  readonly name: string
}

/** One file of a published snapshot: its object, and how it was verified. */
interface Recorded extends Entry {
  readonly digests: ReadonlyArray<string>
  readonly partSize: number
  readonly identity?: cache.Identity | undefined
}

/** What `current.json` says: the complete snapshot now visible. */
interface Manifest {
  readonly version: 2
  readonly snapshot: string
  readonly files: ReadonlyArray<Recorded>
}

/**
 * The resume record of a large object downloaded in ranged parts: the
 * version (ETag, size) and part size it was started with, and the sha256 of
 * each part already on disk (flushed before it was recorded).
 */
interface PartsRecord {
  readonly key: string
  readonly etag: string
  readonly size: number
  readonly partSize: number
  readonly parts: Readonly<Record<string, string>>
  /**
   * Parts under way: the bytes from the part's start that are on the device
   * (flushed before they were recorded), and their sha256: a run after a
   * SIGKILL re-hashes them and goes on from there.
   */
  readonly progress?: Readonly<Record<string, { readonly bytes: number; readonly sha256: string }>> | undefined
  /** The whole-object digests the first answered part vouched for (checked once every part is in). */
  readonly checks?: ReadonlyArray<Check> | undefined
}

/** @internal */
export interface Delivered {
  readonly file: string
  readonly name: string
  readonly size: number
}

/** Where a range's bytes go: a file of the cache, or the file's buffer in memory. */
type Into = { readonly file: string } | { readonly bytes: Uint8Array }

/** A body that is no Node stream, as a Stream of bytes. */
const bodyStream = (body: unknown) =>
  Stream.fromAsyncIterable(
    body as AsyncIterable<Uint8Array>,
    (cause) => new transfer.Retryable({ reason: `the body was cut off: ${String(cause)}` })
  )

const namesShown = 10

/**
 * Objects from this size on go through a partial file with a resume record
 * (checkpointed as they arrive); smaller ones are fetched again whole.
 */
const resumableFrom = 8 * 1024 * 1024

/**
 * The engine of the remote sources that list a set of objects (S3, Azure
 * Blob, the Hugging Face Hub): list, select, fetch into a staged snapshot,
 * publish it at once; resume large objects by parts; one load at a time per
 * entry, across fibers and processes; offline from the last snapshot.
 *
 * @internal
 */
export const make = <C>(source: Source<C>, settings: Settings) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const base = source.locationOf(source.prefix)
    const entryDir = path.join(settings.cacheDir, source.folder, cache.keyOf(...source.cacheKey))
    const manifestFile = path.join(entryDir, "current.json")
    const maskShown = source.maskShown ?? mask_.sourceOf(source.mask)
    const keep = source.keep ?? (() => true)

    const retrying = <A, E>(location: string, attempt: Effect.Effect<A, E | transfer.Retryable>) =>
      transfer.retrying({ location, schedule: settings.schedule, maxRetryAfter: settings.maxRetryAfter, attempt })

    // As the Disk storage: a prefix that is itself a key is a single file, the
    // mask searched in its key; else a folder, the mask searched in each name
    // below it (a key relative to the prefix).
    const select = (objects: ReadonlyArray<Listed>) =>
      Effect.gen(function*() {
        if (source.named === true) return objects.map((object): Entry => ({ ...object, name: object.name ?? object.key }))
        const selector = { storageType: source.storageType, field: source.maskField }
        const exact = objects.find((object) => object.key === source.prefix)
        if (exact !== undefined && source.prefix !== "") {
          if (!keep(exact.key) || (yield* mask_.select(source.mask, [exact.key], selector)).length === 0) {
            return yield* new StorageError.FileDoesNotMatchMask({ path: base, mask: maskShown })
          }
          return [{ ...exact, name: exact.key.split("/").at(-1)! }]
        }
        const folder = source.prefix === "" || source.prefix.endsWith("/") ? source.prefix : `${source.prefix}/`
        // A name that would leave the cache folder ("..", an empty segment) is never delivered.
        const below = objects
          .filter((object) => object.key.startsWith(folder))
          .map((object) => ({ ...object, name: object.key.slice(folder.length) }))
          .filter((object) => object.name.split("/").every((segment) => segment !== "" && segment !== "." && segment !== ".."))
        const kept = below.filter((object) => keep(object.key))
        const selectedNames = new Set(yield* mask_.select(source.mask, kept.map((object) => object.name), selector))
        const matched = kept.filter((object) => selectedNames.has(object.name))
          .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
        if (matched.length === 0) {
          if (below.length === 0) {
            return yield* new StorageError.RemoteNotFound({
              location: base,
              reason: objects.length === 0 ? source.nothingListed : "no file or folder of this name"
            })
          }
          return yield* new StorageError.NothingMatched({
            folder: source.locationOf(folder),
            mask: maskShown,
            names: below.map((object) => object.name).sort().slice(0, namesShown),
            entries: below.length
          })
        }
        return matched as ReadonlyArray<Entry>
      })

    const fromManifest = (manifest: Manifest): ReadonlyArray<Delivered> =>
      manifest.files.map((entry) => ({
        file: path.join(entryDir, "snapshots", manifest.snapshot, ...entry.name.split("/")),
        name: entry.name,
        size: entry.size
      }))

    const partialsDir = path.join(entryDir, "partials")
    const partialOf = (entry: Entry) => {
      const base = path.join(partialsDir, cache.keyOf(entry.key))
      return { data: `${base}.part`, record: `${base}.json` }
    }
    // A whole object fetched and verified by a load that did not publish (interrupted, or failed
    // on another object): kept, linked, with what it was, so that the next load does not fetch it again.
    const finishedOf = (entry: Entry) => {
      const base = path.join(partialsDir, cache.keyOf(entry.key))
      return { data: `${base}.done`, record: `${base}.done.json` }
    }

    // What a partial file already holds, from an earlier run (killed,
    // interrupted, failed): the parts recorded for this very version and part
    // size, and the durable beginnings of parts that were under way, each
    // re-hashed (a beginning's hash is kept, to go on from). Anything else is removed.
    const resumable = (entry: Entry, partSize: number) =>
      Effect.gen(function*() {
        const { data, record } = partialOf(entry)
        const held = yield* cache.readJson<PartsRecord>(record)
        const info = yield* Effect.option(fs.stat(data))
        const parts = new Map<number, string>()
        const prefixes = new Map<number, { readonly bytes: number; readonly hash: crypto.Hash }>()
        if (
          Option.isNone(held) || Option.isNone(info) || held.value.key !== entry.key ||
          held.value.etag !== entry.etag || held.value.size !== entry.size ||
          held.value.partSize !== partSize || Number(info.value.size) !== entry.size
        ) {
          yield* cache.removeAll(data, record)
          return { parts, prefixes, checks: undefined }
        }
        // Only the recorded bytes are read again (not the rest of a large, mostly missing object).
        for (const [index, digest] of Object.entries(held.value.parts)) {
          const start = Number(index) * partSize
          const length = Math.min(entry.size, start + partSize) - start
          const now = yield* Effect.option(cache.digestOfRange(fs, data, start, length))
          if (Option.isSome(now) && now.value === digest) parts.set(Number(index), digest)
        }
        for (const [index, { bytes, sha256 }] of Object.entries(held.value.progress ?? {})) {
          if (parts.has(Number(index)) || !(bytes > 0)) continue
          const start = Number(index) * partSize
          if (start + bytes >= Math.min(entry.size, start + partSize)) continue
          const hash = yield* Effect.option(cache.hashInto(fs, data, crypto.createHash("sha256"), { start, length: bytes }))
          if (Option.isSome(hash) && hash.value.copy().digest("hex") === sha256) prefixes.set(Number(index), { bytes, hash: hash.value })
        }
        return { parts, prefixes, checks: held.value.checks }
      })

    // What the source vouches for, against what arrived.
    const hashOf = (check: Check) => {
      const hash = crypto.createHash(check.algorithm)
      if (check.preamble !== undefined) hash.update(check.preamble)
      return hash
    }

    // One GET of [start, end) of an entry (the whole object when end is
    // undefined) into its place: in a file (the cache) or in the file's buffer
    // (memory), hashed with sha256 and, for the whole object, with each check
    // the source vouches for. A retry starts the range over, with fresh hashes.
    // A shorter answer than the range asked for (RFC 9110 allows it) is
    // kept, and the rest asked for from where it ended, under the same checks.
    // Succeeds with the sha256 of the range (then, for the whole object,
    // the digest of each check) and the checks the first answer vouched for.
    const fetchRange = (
      client: C,
      entry: Entry,
      into: Into,
      start: number,
      end: number | undefined,
      progress: transfer.FileTracker,
      options: {
        /** The sha256 of the bytes before `start` (a part resumed from a checkpoint): continued, never changed. */
        readonly seed?: crypto.Hash | undefined
        /**
         * Checkpoints of the file written (see nodeDrain): `durable(offset, sha256 of the part up to it,
         * the checks the answer vouched for)`.
         */
        readonly checkpoint?: {
          readonly every: number
          readonly durable: (offset: number, sha256: string, vouched: ReadonlyArray<Check>) => void
        } | undefined
        /** Into a file that has its size already (a partial file): written in place, never truncated. */
        readonly inPlace?: boolean | undefined
        /** Whether a whole read also hashes the checks it vouches for (false: the caller hashes them). */
        readonly wholeChecks?: boolean | undefined
      } = {}
    ) =>
      Effect.gen(function*() {
        const location = source.locationOf(entry.key)
        const hashes = [options.seed?.copy() ?? crypto.createHash("sha256")]
        let vouched: ReadonlyArray<Check> | undefined
        const onBytes = (chunk: Uint8Array) => {
          for (const hash of hashes) hash.update(chunk)
        }
        const last = end ?? entry.size
        for (let at = start, first = true; first || at < last; first = false) {
          at = yield* Effect.scoped(Effect.gen(function*() {
            const got = yield* source.get(client, entry, end === undefined ? undefined : { start: at, end })
            // Servers that ignore the version condition are caught here: every part must come from the listed version.
            if (got.etag !== undefined && got.etag !== "" && entry.etag !== "" && got.etag !== entry.etag) {
              return yield* new StorageError.ChecksumMismatch({
                location,
                algorithm: "ETag (the object changed during the load: load again)",
                expected: entry.etag,
                actual: got.etag
              })
            }
            if (vouched === undefined) {
              vouched = got.checks ?? entry.checks ?? []
              // The whole object is hashed for each check as it arrives; parts are checked whole at the end.
              if (end === undefined && options.wholeChecks !== false) hashes.push(...vouched.map(hashOf))
            }
            const served = end === undefined ? undefined : got.range
            const upto = served?.end ?? last
            if (served !== undefined && (served.start !== at || upto <= at || upto > last)) {
              return yield* new transfer.Retryable({
                reason: `asked for bytes ${at}-${last - 1}, the server answered ${served.start ?? "?"}-${(served.end ?? 0) - 1}`
              })
            }
            const written = "bytes" in into
              ? yield* intoMemory(got.body, into.bytes.subarray(at, last), onBytes, progress)
              : yield* intoFile(
                got.body,
                into.file,
                end === undefined && options.inPlace !== true ? "w" : "r+",
                at,
                end !== undefined,
                onBytes,
                progress,
                {
                  every: options.checkpoint?.every,
                  mark: () => hashes[0]!.copy().digest("hex"),
                  durable: (bytes, mark) => options.checkpoint?.durable(at + bytes, mark, vouched ?? [])
                }
              )
            if (written !== upto - at) {
              return yield* new transfer.Retryable({ reason: `got ${at - start + written} of ${last - start} bytes` })
            }
            return upto
          }))
        }
        return { digests: hashes.map((hash) => hash.digest("hex")), checks: vouched ?? [] }
      })

    // A body into a file at `at`: piped on Node, else written chunk by chunk (then flushed).
    const intoFile = (
      body: unknown,
      file: string,
      flags: "w" | "r+",
      at: number,
      part: boolean,
      onBytes: (chunk: Uint8Array) => void,
      progress: transfer.FileTracker,
      checkpoint: {
        readonly every: number | undefined
        readonly mark: () => string
        readonly durable: (bytes: number, mark: string) => void
      }
    ) =>
      nodeDrain.isNodeReadable(body)
        ? nodeDrain.drain({
          body,
          file,
          flags,
          start: at,
          onBytes,
          progress,
          stallTimeout: settings.stallTimeout,
          checkpoint: checkpoint.every === undefined ? undefined : { ...checkpoint, every: checkpoint.every },
          // A part runs beside others: each holds little (see nodeDrain).
          ...(part ? { highWaterMark: 64 * 1024 } : {})
        })
        : Effect.scoped(Effect.flatMap(
          Effect.mapError(fs.open(file, { flag: flags }), errors.writeFailed(file, "open")),
          (handle) =>
            Effect.zipRight(
              handle.seek(at, "start"),
              transfer.drain({
                body: bodyStream(body),
                write: (bytes) => Effect.mapError(handle.writeAll(bytes), errors.writeFailed(file, "write")),
                onBytes,
                progress,
                stallTimeout: settings.stallTimeout
              }).pipe(Effect.zipLeft(Effect.mapError(handle.sync, errors.writeFailed(file, "flush (fsync)"))))
            )
        ))

    // A body into its region of the file's buffer, copied as it arrives.
    const intoMemory = (
      body: unknown,
      region: Uint8Array,
      onBytes: (chunk: Uint8Array) => void,
      progress: transfer.FileTracker
    ) =>
      nodeDrain.isNodeReadable(body)
        ? nodeDrain.drainInto({ body, into: region, onBytes, progress, stallTimeout: settings.stallTimeout })
        : Effect.suspend(() => {
          let written = 0
          return transfer.drain({
            body: bodyStream(body),
            write: (bytes) =>
              written + bytes.byteLength > region.byteLength
                ? Effect.fail(new transfer.Retryable({ reason: `the body had more than the ${region.byteLength} bytes asked for` }))
                : Effect.sync(() => {
                  region.set(bytes, written)
                  written += bytes.byteLength
                }),
            onBytes,
            progress,
            stallTimeout: settings.stallTimeout
          })
        })

    // One object into `target`. A small one (or one that cannot be resumed:
    // no version, no ranges): one streamed GET, its announced digests checked
    // as it arrives, fetched again whole after a failure. Any other: into a
    // partial file that survives the run, as one stream or, when large, as
    // parallel ranged GETs pinned to its version; each part is recorded once
    // it is flushed, and every few MiB the bytes a stream has on the device
    // are recorded too (flushed first), so that a run after a SIGKILL fetches
    // only what no record holds. The announced digests are then checked on
    // the whole file (in workers, as parts finish in order). Succeeds with the
    // sha256 digests of the file, one per part.
    const download = (client: C, entry: Entry, target: string, tracker: transfer.Tracker) =>
      Effect.gen(function*() {
        const location = source.locationOf(entry.key)
        const progress = tracker.file(location, entry.name)
        const mismatch = (algorithm: string, expected: string, actual: string) =>
          new StorageError.ChecksumMismatch({ location, algorithm, expected, actual })
        yield* cache.ensureDir(path.dirname(target))
        const inParts = entry.size >= settings.multipartThreshold && entry.ranged !== false
        if (!inParts && (entry.size < resumableFrom || entry.etag === "" || entry.ranged === false)) {
          yield* progress.start(entry.size, 0)
          const { checks, digests: [sha256, ...actual] } = yield* retrying(
            location,
            fetchRange(client, entry, { file: target }, 0, undefined, progress)
          )
          for (const [i, check] of checks.entries()) {
            if (actual[i] !== check.expected.toLowerCase()) {
              yield* cache.removeAll(target)
              return yield* mismatch(check.label, check.expected, actual[i]!)
            }
          }
          yield* progress.finish(entry.size)
          return { digests: [sha256!], partSize: Math.max(1, entry.size) }
        }

        const partSize = inParts ? settings.partSize : entry.size
        const count = Math.ceil(entry.size / partSize)
        const partBytes = (i: number) => Math.min(entry.size, (i + 1) * partSize) - i * partSize
        // How often a stream's durable bytes are recorded: every 4 MiB (less for small parts).
        const every = Math.max(256 * 1024, Math.min(4 * 1024 * 1024, Math.floor(partSize / 4)))
        const { data, record } = partialOf(entry)
        const { checks: recordedChecks, parts: done, prefixes } = yield* resumable(entry, partSize)
        // Known from the record (a resume), else from the first answer, else (every part was
        // recorded by a run that did not record them) from the listing.
        let checks = recordedChecks
        // The durable beginnings of the parts under way (resumed ones first).
        const under = new Map<number, { readonly bytes: number; readonly sha256: string }>(
          [...prefixes].map(([i, { bytes, hash }]) => [i, { bytes, sha256: hash.copy().digest("hex") }])
        )
        if (done.size === 0 && prefixes.size === 0) {
          // The whole file exists at its size first; each part writes its own range.
          yield* cache.ensureDir(partialsDir)
          yield* Effect.scoped(Effect.flatMap(
            Effect.mapError(fs.open(data, { flag: "w" }), errors.writeFailed(data, "open")),
            (handle) => Effect.mapError(handle.truncate(entry.size), errors.writeFailed(data, "allocate"))
          ))
        } else {
          const kept = [...done.keys()].reduce((sum, i) => sum + partBytes(i), 0) +
            [...prefixes.values()].reduce((sum, prefix) => sum + prefix.bytes, 0)
          yield* Effect.logDebug(
            `Resuming ${errors.cap(location)}: ${kept} of ${entry.size} bytes are already in the cache ` +
              `(${done.size} of ${count} parts whole, ${prefixes.size} begun)`
          )
        }
        yield* progress.start(
          entry.size,
          [...done.keys()].reduce((sum, i) => sum + partBytes(i), 0) + [...under.values()].reduce((sum, p) => sum + p.bytes, 0)
        )
        // The record is written one at a time: when a part is finished (once it is on the device),
        // and, while parts are under way, at most every 250 ms when a checkpoint moved.
        const recordLock = yield* Effect.makeSemaphore(1)
        let moved = false
        const writeRecord = Effect.suspend(() => {
          moved = false
          return cache.writeJsonAtomic(record, {
            key: entry.key,
            etag: entry.etag,
            size: entry.size,
            partSize,
            parts: Object.fromEntries([...done].map(([index, sha]) => [String(index), sha])),
            ...(under.size === 0 ? {} : { progress: Object.fromEntries([...under].map(([i, p]) => [String(i), p])) }),
            ...(checks === undefined ? {} : { checks })
          } satisfies PartsRecord)
        })
        const recordMoved = recordLock.withPermits(1)(Effect.suspend(() => (moved ? Effect.ignore(writeRecord) : Effect.void)))
        const recordPart = (i: number, digest: string) =>
          recordLock.withPermits(1)(Effect.zipRight(
            Effect.sync(() => {
              done.set(i, digest)
              under.delete(i)
            }),
            writeRecord
          ))
        if (done.size === 0 && prefixes.size === 0) yield* writeRecord
        // From a Node callback: only recorded here; a fiber writes it.
        const checkpoint = (i: number) => ({
          every,
          durable: (offset: number, sha256: string, vouched: ReadonlyArray<Check>) => {
            // A flush that ends after its part was finished (and recorded whole) says nothing new.
            if (done.has(i)) return
            checks ??= vouched
            under.set(i, { bytes: offset - i * partSize, sha256 })
            moved = true
          }
        })
        // The digests the source announced are of the whole object: each is computed in a worker
        // thread (as the HTTP storage's) from the file itself, part after part in file order as the
        // parts are finished (resumed ones first), while later parts are still arriving.
        const actual = yield* Effect.scoped(Effect.gen(function*() {
          yield* Effect.forkScoped(Effect.repeat(recordMoved, Schedule.spaced(Duration.millis(250))))
          // Interrupted or failed: what is durable by then is recorded, for the next run.
          yield* Effect.addFinalizer(() => recordMoved)
          type Hasher = Effect.Effect.Success<ReturnType<typeof cache.rangeHasher>>
          let hashers: ReadonlyArray<Hasher> | undefined
          let hashed = 0
          const catchUp = Effect.sync(() => {
            if (hashers === undefined) return
            for (; hashed < count && done.has(hashed); hashed++) {
              for (const hasher of hashers) hasher.add(hashed * partSize, partBytes(hashed))
            }
          })
          // Once the checks are known, a hasher each, fed from part 0 on.
          const useChecks = (vouched: ReadonlyArray<Check>) =>
            Effect.gen(function*() {
              if (hashers !== undefined) return
              checks ??= vouched
              hashers = yield* Effect.forEach(checks, (check) =>
                cache.rangeHasher(data, { algorithm: check.algorithm, preamble: check.preamble }))
              yield* catchUp
            })
          if (checks !== undefined) yield* useChecks(checks)
          yield* Effect.forEach(
            Array.from({ length: count }, (_, i) => i).filter((i) => !done.has(i)),
            (i) => {
              const start = i * partSize
              const end = Math.min(entry.size, start + partSize)
              const prefix = prefixes.get(i)
              const from = start + (prefix?.bytes ?? 0)
              // One stream from the start is a whole GET (its answer vouches for the object's digests).
              const whole = count === 1 && from === 0
              return Effect.flatMap(
                retrying(
                  location,
                  fetchRange(client, entry, { file: data }, from, whole ? undefined : end, progress, {
                    seed: prefix?.hash,
                    checkpoint: checkpoint(i),
                    inPlace: true,
                    wholeChecks: false
                  })
                ),
                ({ checks: vouched, digests: [digest] }) =>
                  recordLock.withPermits(1)(useChecks(vouched)).pipe(
                    Effect.zipRight(recordPart(i, digest!)),
                    Effect.zipRight(catchUp)
                  )
              )
            },
            { concurrency: settings.partConcurrency, discard: true }
          )
          yield* useChecks(entry.checks ?? [])
          return yield* Effect.forEach(hashers ?? [], (hasher) => hasher.digest)
        }))
        const info = yield* Effect.mapError(fs.stat(data), errors.fromPlatformError(data, "stat"))
        if (Number(info.size) !== entry.size) {
          yield* cache.removeAll(data, record)
          return yield* mismatch("size", String(entry.size), String(info.size))
        }
        for (const [i, check] of (checks ?? []).entries()) {
          if (actual[i] !== check.expected.toLowerCase()) {
            yield* cache.removeAll(data, record)
            return yield* mismatch(check.label, check.expected, actual[i]!)
          }
        }
        yield* cache.commit(data, target)
        yield* cache.removeAll(record)
        yield* progress.finish(entry.size)
        return {
          digests: Array.from({ length: count }, (_, i) => done.get(i)!),
          partSize
        }
      })

    // A file of the current snapshot, checked as the HTTP cache checks its
    // files: re-hashed when its identity changed (or always).
    const check = (file: string, recorded: Recorded) =>
      Effect.either(cache.checkCached(fs, file, recorded, settings.verify))

    const fileOf = (snapshot: string, entry: Entry) => path.join(entryDir, "snapshots", snapshot, ...entry.name.split("/"))
    const readManifest = Effect.map(
      cache.readJson<Manifest>(manifestFile),
      Option.filter((manifest) => manifest.version === 2)
    )
    // The identities of a published snapshot's files, as they are now (after every link and rename).
    const withIdentities = (manifest: Manifest) =>
      Effect.map(
        Effect.forEach(manifest.files, (entry) => cache.identityOf(fileOf(manifest.snapshot, entry))),
        (identities): Manifest => ({
          ...manifest,
          files: manifest.files.map((entry, i) => ({ ...entry, identity: Option.getOrUndefined(identities[i]!) }))
        })
      )

    const load: Effect.Effect<ReadonlyArray<Delivered>, StorageError.StorageError, Scope.Scope> = Effect.gen(function*() {
      const tracker = yield* transfer.makeTracker
      if (settings.offline) {
        const manifest = yield* readManifest
        if (Option.isNone(manifest)) {
          return yield* new StorageError.NotCached({ location: base, cacheDir: settings.cacheDir })
        }
        const kept = new Set(
          yield* mask_.select(source.mask, manifest.value.files.map((entry) => entry.name), {
            storageType: source.storageType,
            field: source.maskField
          })
        )
        const entries = manifest.value.files.filter((entry) =>
          keep(entry.key) && (kept.has(entry.name) || entry.key === source.prefix)
        )
        for (const entry of entries) {
          const file = fileOf(manifest.value.snapshot, entry)
          const checked = yield* check(file, entry)
          if (checked._tag === "Left") {
            return yield* new StorageError.ChecksumMismatch({
              location: `${source.locationOf(entry.key)} (the cached copy in ${file})`,
              algorithm: "sha256",
              expected: entry.digests.join(","),
              actual: checked.left.actual
            })
          }
          yield* tracker.file(source.locationOf(entry.key), entry.name).cached(entry.size)
        }
        return fromManifest({ ...manifest.value, files: entries })
      }

      const client = yield* source.connect
      const selected = yield* Effect.flatMap(retrying(base, source.list(client)), select)
      yield* cache.ensureDir(entryDir)
      return yield* Effect.scoped(Effect.gen(function*() {
        yield* cache.lock(path.join(entryDir, "lock"), { location: base, timeout: settings.lockTimeout })
        // Staging folders left by a process that died: nobody else holds the lock, so they are orphans.
        const leftovers = (yield* Effect.orElseSucceed(fs.readDirectory(entryDir), () => []))
          .filter((name) => name.startsWith("staging-"))
        yield* cache.removeAll(...leftovers.map((name) => path.join(entryDir, name)))
        // Partial objects of versions no longer selected go; the others are resumed.
        const wanted = new Set(selected.map((entry) => cache.keyOf(entry.key)))
        const partials = yield* Effect.orElseSucceed(fs.readDirectory(partialsDir), () => [])
        yield* cache.removeAll(
          ...partials.filter((name) => !wanted.has(name.replace(/\.(part|json|done\.json|done)$/, "")))
            .map((name) => path.join(partialsDir, name))
        )

        const current = yield* readManifest
        // The files of the current snapshot that are still intact (re-hashed when they changed on disk).
        const intact = new Map<string, Recorded>()
        let rehashed = false
        if (Option.isSome(current)) {
          for (const entry of current.value.files) {
            const file = fileOf(current.value.snapshot, entry)
            const checked = yield* check(file, entry)
            if (checked._tag === "Right") {
              intact.set(entry.key, { ...entry, identity: checked.right.identity })
              rehashed ||= checked.right.rehashed
            } else {
              yield* Effect.logWarning(
                `The cached copy of ${errors.cap(source.locationOf(entry.key))} (${errors.cap(file)}) changed on disk ` +
                  `(${checked.left.actual}); fetching it again`
              )
            }
          }
        }
        const unchanged = (entry: Entry) => {
          const before = intact.get(entry.key)
          return before !== undefined && before.etag === entry.etag && before.size === entry.size &&
            before.name === entry.name
        }
        if (Option.isSome(current) && current.value.files.length === selected.length && selected.every(unchanged)) {
          const manifest: Manifest = { ...current.value, files: selected.map((entry) => intact.get(entry.key)!) }
          if (rehashed) yield* Effect.ignore(cache.writeJsonAtomic(manifestFile, manifest))
          for (const entry of manifest.files) {
            yield* tracker.file(source.locationOf(entry.key), entry.name).cached(entry.size)
          }
          return fromManifest(manifest)
        }

        // Room for what is still to fetch (partial objects count for what they hold)?
        const toFetch = selected.filter((entry) => !unchanged(entry))
        const held = yield* Effect.forEach(toFetch, (entry) =>
          Effect.map(cache.readJson<PartsRecord>(partialOf(entry).record), (record) =>
            Option.match(record, {
              onNone: () => 0,
              onSome: (record) =>
                record.etag === entry.etag && record.size === entry.size
                  ? Object.keys(record.parts).length * record.partSize
                  : 0
            })))
        yield* cache.ensureSpace(
          entryDir,
          toFetch.reduce((sum, entry) => sum + entry.size, 0) - held.reduce((sum, bytes) => sum + bytes, 0)
        )

        // A new snapshot: staged whole, then made visible at once.
        const id = `${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 8)}`
        const staging = path.join(entryDir, `staging-${id}`)
        const snapshot = path.join(entryDir, "snapshots", id)
        yield* cache.ensureDir(staging)
        // What this load fetched (and verified), to keep if it does not publish.
        const fetched: Array<{ readonly target: string; readonly recorded: Recorded }> = []
        const reused: Array<Entry> = []
        const keepFetched = Effect.forEach(fetched, ({ recorded, target }) => {
          const { data, record } = finishedOf(recorded)
          return Effect.ignore(Effect.gen(function*() {
            yield* cache.ensureDir(partialsDir)
            yield* cache.removeAll(data, record)
            yield* fs.link(target, data)
            yield* cache.writeJsonHint(record, { ...recorded, identity: undefined })
          }))
        }, { discard: true })
        // A finished copy of this very version from a load that did not publish, still intact.
        const reuseFinished = (entry: Entry, target: string) =>
          Effect.gen(function*() {
            const { data, record } = finishedOf(entry)
            const held = yield* cache.readJson<Recorded>(record)
            if (
              Option.isNone(held) || entry.etag === "" || held.value.key !== entry.key || held.value.etag !== entry.etag ||
              held.value.size !== entry.size || held.value.name !== entry.name
            ) {
              return Option.none<Recorded>()
            }
            const checked = yield* check(data, held.value)
            if (checked._tag === "Left") {
              yield* cache.removeAll(data, record)
              return Option.none<Recorded>()
            }
            yield* cache.ensureDir(path.dirname(target))
            yield* Effect.mapError(
              Effect.orElse(fs.link(data, target), () => fs.copyFile(data, target)),
              errors.writeFailed(target, "link")
            )
            yield* tracker.file(source.locationOf(entry.key), entry.name).cached(entry.size)
            yield* Effect.logDebug(`${errors.cap(source.locationOf(entry.key))} was fetched by an earlier load: not fetched again`)
            reused.push(entry)
            return Option.some<Recorded>({ ...held.value, identity: undefined })
          })
        const stage = Effect.forEach(selected, (entry) => {
          const target = path.join(staging, ...entry.name.split("/"))
          if (unchanged(entry)) {
            // Unchanged since the last snapshot, and intact: linked, not fetched again.
            const before = intact.get(entry.key)!
            const from = fileOf(Option.getOrThrow(current).snapshot, entry)
            return cache.ensureDir(path.dirname(target)).pipe(
              Effect.zipRight(
                Effect.mapError(
                  Effect.orElse(fs.link(from, target), () => fs.copyFile(from, target)),
                  errors.writeFailed(target, "link")
                )
              ),
              Effect.zipRight(tracker.file(source.locationOf(entry.key), entry.name).cached(entry.size)),
              Effect.as<Recorded>(before)
            )
          }
          return Effect.flatMap(reuseFinished(entry, target), (reused) =>
            Option.isSome(reused)
              ? Effect.succeed(reused.value)
              : Effect.map(download(client, entry, target, tracker), (verified): Recorded => {
                const recorded = { ...entry, ...verified }
                fetched.push({ target, recorded })
                return recorded
              }))
        }, { concurrency: settings.concurrency })

        const recorded = yield* stage.pipe(
          Effect.zipLeft(cache.ensureDir(path.dirname(snapshot))),
          Effect.zipLeft(Effect.mapError(fs.rename(staging, snapshot), errors.writeFailed(snapshot, "publish"))),
          Effect.zipLeft(cache.sync(path.dirname(snapshot))),
          // An interrupted or failed load leaves the last complete snapshot (and
          // the partial and finished objects, for the next run) and nothing else.
          Effect.onExit((exit) => Effect.zipRight(exit._tag === "Failure" ? keepFetched : Effect.void, cache.removeAll(staging)))
        )
        // Published: the finished copies of earlier loads are in the snapshot now.
        yield* cache.removeAll(...reused.flatMap((entry) => Object.values(finishedOf(entry))))
        const manifest = yield* withIdentities({ version: 2, snapshot: id, files: recorded })
        yield* cache.writeJsonAtomic(manifestFile, manifest)
        // Older snapshots go; the one just replaced stays, for readers that still use its paths.
        const keep = new Set([id, ...Option.match(current, { onNone: () => [], onSome: (m) => [m.snapshot] })])
        const snapshots = yield* Effect.orElseSucceed(fs.readDirectory(path.join(entryDir, "snapshots")), () => [])
        yield* cache.removeAll(
          ...snapshots.filter((name) => !keep.has(name)).map((name) => path.join(entryDir, "snapshots", name))
        )
        return fromManifest(manifest)
      }))
    })

    // The memory sink: each selected object goes straight into one buffer of
    // its size (reserved from the MemoryBudget first), from one streamed GET
    // or from parallel ranged GETs into their regions of it: no disk, no
    // second copy. The digests the source vouches for are checked as the bytes
    // land: a single stream's as it arrives, parts' in a worker fed in file
    // order as the parts finish. Nothing is kept for a resume: a failed or
    // interrupted load releases its buffers and its budget at once.
    const fetchIntoMemory = (client: C, entry: Entry, tracker: transfer.Tracker) =>
      Effect.gen(function*() {
        const location = source.locationOf(entry.key)
        const progress = tracker.file(location, entry.name)
        const bytes = yield* release.allocateScoped(entry.size)
        yield* progress.start(entry.size, 0)
        const into = { bytes }
        const { actual, checks } = entry.size < settings.multipartThreshold || entry.ranged === false
          ? yield* Effect.map(
            retrying(location, fetchRange(client, entry, into, 0, undefined, progress)),
            ({ checks, digests: [, ...actual] }) => ({ actual, checks })
          )
          : yield* Effect.scoped(Effect.gen(function*() {
            const count = Math.ceil(entry.size / settings.partSize)
            const regionOf = (i: number) =>
              bytes.subarray(i * settings.partSize, Math.min(entry.size, (i + 1) * settings.partSize))
            const finished = new Set<number>()
            let checks: ReadonlyArray<Check> | undefined
            let hashers: ReadonlyArray<Effect.Effect.Success<ReturnType<typeof cache.bytesHasher>>> = []
            let hashed = 0
            // Parts are handed to the hashers one at a time, in file order.
            const lock = yield* Effect.makeSemaphore(1)
            const catchUp = Effect.suspend(() => {
              const ready: Array<number> = []
              for (; hashed < count && finished.has(hashed); hashed++) ready.push(hashed)
              return Effect.forEach(ready, (i) => Effect.forEach(hashers, (hasher) => hasher.add(regionOf(i))), {
                discard: true
              })
            })
            const useChecks = (vouched: ReadonlyArray<Check>) =>
              checks !== undefined ? Effect.void : Effect.suspend(() => {
                checks = vouched
                return Effect.map(
                  Effect.forEach(vouched, (check) => cache.bytesHasher({ algorithm: check.algorithm, preamble: check.preamble })),
                  (made) => void (hashers = made)
                )
              })
            yield* Effect.forEach(
              Array.from({ length: count }, (_, i) => i),
              (i) => {
                const start = i * settings.partSize
                const end = Math.min(entry.size, start + settings.partSize)
                return Effect.flatMap(
                  retrying(location, fetchRange(client, entry, into, start, end, progress)),
                  ({ checks: vouched }) =>
                    lock.withPermits(1)(
                      useChecks(vouched).pipe(Effect.zipRight(Effect.sync(() => finished.add(i))), Effect.zipRight(catchUp))
                    )
                )
              },
              { concurrency: settings.partConcurrency, discard: true }
            )
            return {
              checks: checks ?? [],
              actual: yield* Effect.forEach(hashers, (hasher) => hasher.digest)
            }
          }))
        for (const [i, check] of checks.entries()) {
          if (actual[i] !== check.expected.toLowerCase()) {
            return yield* new StorageError.ChecksumMismatch({
              location,
              algorithm: check.label,
              expected: check.expected,
              actual: actual[i]!
            })
          }
        }
        yield* progress.finish(entry.size)
        return yield* LoadedFile.bytes({ path: location, name: entry.name, bytes })
      })

    // The memory of every file of the load, reserved at once before the first buffer (they are held
    // together); while it waits, each file's progress says so.
    const reserveFor = (entries: ReadonlyArray<Entry>, tracker: transfer.Tracker) =>
      release.reserve(entries.reduce((sum, entry) => sum + entry.size, 0), {
        location: entries.length === 1 ? source.locationOf(entries[0]!.key) : `${entries.length} files of ${base}`,
        onWait: Effect.forEach(entries, (entry) => tracker.file(source.locationOf(entry.key), entry.name).waiting(entry.size), {
          discard: true
        })
      })

    const loadBytes: Effect.Effect<ReadonlyArray<LoadedFile.Bytes>, StorageError.StorageError, Scope.Scope> = Effect.gen(
      function*() {
        const tracker = yield* transfer.makeTracker
        const client = yield* source.connect
        const selected = yield* Effect.flatMap(retrying(base, source.list(client)), select)
        yield* reserveFor(selected, tracker)
        return yield* Effect.forEach(
          selected,
          (entry) => release.keptOnSuccess(fetchIntoMemory(client, entry, tracker)),
          { concurrency: settings.concurrency }
        )
      }
    )

    // One file of the selection, named by its location (as a `Bytes` file of `loadBytes` names it).
    const loadBytesOf = (location: string): Option.Option<Effect.Effect<LoadedFile.Bytes, StorageError.StorageError, Scope.Scope>> =>
      !location.startsWith(source.locationOf(""))
        ? Option.none()
        : Option.some(Effect.gen(function*() {
          const tracker = yield* transfer.makeTracker
          const client = yield* source.connect
          const selected = yield* Effect.flatMap(retrying(base, source.list(client)), select)
          const entry = selected.find((entry) => source.locationOf(entry.key) === location)
          if (entry === undefined) {
            return yield* new StorageError.RemoteNotFound({ location, reason: "not among the files this storage selects" })
          }
          yield* reserveFor([entry], tracker)
          return yield* release.keptOnSuccess(fetchIntoMemory(client, entry, tracker))
        }))

    return { load, loadBytes, loadBytesOf, base, entryDir } as const
  })
