/**
 * The transfer engine: one object of a remote source into a sink, with one
 * set of rules for every source. A file of the cache (a partial file that
 * survives the run, checkpointed as it arrives, resumed from what its record
 * holds, verified whole before it is renamed into place) or one buffer in
 * memory (parallel ranged reads into their regions, verified as they land).
 * A source supplies only ranged reads pinned to a version (`Reader`).
 *
 * @internal
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Cause from "effect/Cause"
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
import * as nodeDrain from "./nodeDrain.js"
import type * as options_ from "./options.js"
import * as release from "./release.js"
import * as transfer from "./transfer.js"
import * as unpacking from "./unpacking.js"

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
  /** The digest it must have (undefined: computed and handed back, not compared). */
  readonly expected: string | undefined
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
  /**
   * The answer is not of the listed object (another version or size, the
   * whole file to a ranged read, …), said why: never spliced in, whatever
   * the source's version (a load then fails with a `ChecksumMismatch` on
   * "ETag", which a source may take as its cue to start over).
   */
  readonly changed?: string | undefined
}

/**
 * What the engine needs of a source: where a key is (in messages and
 * progress), and one GET of an object (or of [start, end) of it) pinned to
 * its listed version where the source can.
 *
 * @internal
 */
export interface Reader<C> {
  /** The storage's name, in errors. */
  readonly storageType: string
  /** Where a key is, in messages, logs and progress (`s3://bucket/key`). */
  readonly locationOf: (key: string) => string
  /** One GET of the object, or of [start, end) of it, pinned to its listed version where the source can. */
  readonly get: (
    client: C,
    entry: Entry,
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
  /** Unpacks the archives the loads deliver (`unpack`); undefined: none are. */
  readonly unpacker?: unpacking.Unpacker | undefined
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
      cache: kwargs.cache,
      unpacker: yield* unpacking.unpackerOf(kwargs)
    }
  })

const MiB = 1024 * 1024

/** An object as the engine fetches it: as listed, and the name it is delivered under. @internal */
export interface Entry extends Listed {
  readonly name: string
  /**
   * The source announced no size (an HTTP body without Content-Length):
   * one whole read of whatever the body holds, never resumed; `size` is 0.
   */
  readonly unsized?: boolean | undefined
}

/**
 * The resume record of a large object downloaded in ranged parts: the
 * version (ETag, size) and part size it was started with, and the sha256 of
 * each part already on disk (flushed before it was recorded).
 */
export interface PartsRecord {
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

/** Where a range's bytes go: a file of the cache, or the file's buffer in memory. */
type Into = { readonly file: string } | { readonly bytes: Uint8Array }

/** A body that is no Node stream, as a Stream of bytes. */
const bodyStream = (body: unknown) =>
  Stream.fromAsyncIterable(
    body as AsyncIterable<Uint8Array>,
    (cause) => new transfer.Retryable({ reason: `the body was cut off: ${String(cause)}` })
  )
/**
 * Objects from this size on go through a partial file with a resume record
 * (checkpointed as they arrive); smaller ones are fetched again whole.
 */
const resumableFrom = 8 * 1024 * 1024

/**
 * The engine for one source, its partial files in `partialsDir`.
 *
 * @internal
 */
export const make = <C>(source: Reader<C>, settings: Settings, partialsDir: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const retrying = <A, E>(location: string, attempt: Effect.Effect<A, E | transfer.Retryable>) =>
      transfer.retrying({ location, schedule: settings.schedule, maxRetryAfter: settings.maxRetryAfter, attempt })
    // An object's partial file and its record.
    const partialOf = (entry: { readonly key: string }) => {
      const base = path.join(partialsDir, cache.keyOf(entry.key))
      return { data: `${base}.part`, record: `${base}.json` }
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

    // The bytes a partial file holds for this very version (what is left to
    // fetch is the rest); a partial of another version is removed first, so
    // that its space is free for this one.
    const held = (entry: Entry) =>
      Effect.gen(function*() {
        const { data, record } = partialOf(entry)
        const found = yield* cache.readJson<PartsRecord>(record)
        if (Option.isNone(found)) return 0
        if (found.value.key !== entry.key || found.value.etag !== entry.etag || found.value.size !== entry.size) {
          yield* cache.removeAll(data, record)
          return 0
        }
        const partSize = found.value.partSize
        return Object.keys(found.value.parts).length * partSize +
          Object.values(found.value.progress ?? {}).reduce((sum, prefix) => sum + prefix.bytes, 0)
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
        /** false: the bytes are not hashed here (a worker hashes them from the file); no sha256 comes back. */
        readonly hash?: boolean | undefined
      } = {}
    ) =>
      Effect.gen(function*() {
        const location = source.locationOf(entry.key)
        const hashes = options.hash === false ? [] : [options.seed?.copy() ?? crypto.createHash("sha256")]
        let vouched: ReadonlyArray<Check> | undefined
        const onBytes = (chunk: Uint8Array) => {
          for (const hash of hashes) hash.update(chunk)
        }
        const last = end ?? entry.size
        let bytes = 0
        for (let at = start, first = true; first || at < last; first = false) {
          at = yield* Effect.scoped(Effect.gen(function*() {
            const got = yield* source.get(client, entry, end === undefined ? undefined : { start: at, end })
            // Servers that ignore the version condition are caught here: every part must come from the listed version.
            if (
              got.changed !== undefined ||
              (got.etag !== undefined && got.etag !== "" && entry.etag !== "" && got.etag !== entry.etag)
            ) {
              return yield* new StorageError.ChecksumMismatch({
                location,
                algorithm: "ETag (the object changed during the load: load again)",
                expected: entry.etag,
                actual: got.changed ?? got.etag ?? ""
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
                  mark: () => hashes[0]?.copy().digest("hex") ?? "",
                  durable: (bytes, mark) => options.checkpoint?.durable(at + bytes, mark, vouched ?? [])
                },
                entry.unsized === true ? undefined : upto - at
              )
            bytes += written
            // A body of no announced size is whatever it holds.
            if (entry.unsized === true && end === undefined) return at + written
            if (written !== upto - at) {
              return yield* new transfer.Retryable({ reason: `got ${at - start + written} of ${last - start} bytes` })
            }
            return upto
          }))
        }
        return { digests: hashes.map((hash) => hash.digest("hex")), checks: vouched ?? [], bytes }
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
      },
      /** The bytes the answer holds (undefined: unknown). */
      size: number | undefined
    ) =>
      nodeDrain.isNodeReadable(body)
        ? nodeDrain.drain({
          body,
          file,
          flags,
          start: at,
          size,
          onBytes,
          progress,
          stallTimeout: settings.stallTimeout,
          checkpoint: checkpoint.every === undefined ? undefined : { ...checkpoint, every: checkpoint.every },
          // A part runs beside others: each holds little (see nodeDrain).
          ...(part ? { batch: 256 * 1024 } : {})
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
    // sha256 digests of the file, one per part. `target`'s folder exists.
    const download = (client: C, entry: Entry, target: string, tracker: transfer.Tracker) =>
      Effect.suspend(() => {
        // An archive followed as it arrives is abandoned (what it unpacked goes) when the download fails.
        const held: { follower?: unpacking.Follower | undefined } = {}
        return downloadInto(client, entry, target, tracker, held).pipe(
          Effect.onExit((exit) => (exit._tag === "Failure" ? Effect.sync(() => held.follower?.abandon()) : Effect.void))
        )
      })
    const downloadInto = (
      client: C,
      entry: Entry,
      target: string,
      tracker: transfer.Tracker,
      held: { follower?: unpacking.Follower | undefined }
    ) =>
      Effect.gen(function*() {
        const location = source.locationOf(entry.key)
        const progress = tracker.file(location, entry.name)
        const mismatch = (algorithm: string, expected: string, actual: string) =>
          new StorageError.ChecksumMismatch({ location, algorithm, expected, actual })
        // Parts only when more than one can run at once (else one stream, checkpointed all the same).
        const inParts = entry.size >= settings.multipartThreshold && settings.partConcurrency > 1 &&
          entry.ranged !== false && entry.unsized !== true
        if (
          !inParts &&
          (entry.size < resumableFrom || entry.etag === "" || entry.ranged === false || entry.unsized === true)
        ) {
          yield* progress.start(entry.unsized === true ? undefined : entry.size, 0)
          const { bytes, checks, digests: [sha256, ...actual] } = yield* retrying(
            location,
            fetchRange(client, entry, { file: target }, 0, undefined, progress)
          )
          for (const [i, check] of checks.entries()) {
            if (check.expected !== undefined && actual[i] !== check.expected.toLowerCase()) {
              yield* cache.removeAll(target)
              return yield* mismatch(check.label, check.expected, actual[i]!)
            }
          }
          yield* progress.finish(bytes)
          return { size: bytes, digests: [sha256!], partSize: Math.max(1, bytes), checked: actual }
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
        // An archive unpacked as it arrives (tar): told how far the file is written in order (the
        // parts done from the first on, and the flushed bytes of the next), and when it is verified.
        const follower = settings.unpacker?.follow(entry, location)?.(data)
        held.follower = follower
        let followed = 0
        const advance = () => {
          if (follower === undefined) return
          while (followed < count && done.has(followed)) followed++
          const start = followed * partSize
          const partial = Math.max(reached.get(followed) ?? 0, start + (prefixes.get(followed)?.bytes ?? 0))
          follower.advance(Math.min(entry.size, followed >= count ? entry.size : partial))
        }
        // How far each part's bytes are on the device: a retried part goes on from there.
        const reached = new Map<number, number>()
        advance()
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
              advance()
            }),
            writeRecord
          ))
        if (done.size === 0 && prefixes.size === 0) yield* writeRecord
        // The digests the source announced are of the whole object: each is computed in a worker
        // thread (as the HTTP storage's) from the file itself, part after part in file order as the
        // parts are finished (resumed ones first), while later parts are still arriving.
        const actual = yield* Effect.scoped(Effect.gen(function*() {
          // Each part's sha256 is computed in a worker from the file as the part is written (the
          // event loop only receives and writes): at each checkpoint, once the bytes are flushed, and
          // at the part's end. From a Node callback, a checkpoint is only noted; a fiber records it.
          const digester = yield* cache.partsDigester(data)
          const checkpoint = (i: number) => ({
            every,
            durable: (offset: number, _sha256: string, vouched: ReadonlyArray<Check>) => {
              // A flush told after a later one says nothing new (and the part's digest is past it).
              if (offset <= (reached.get(i) ?? -1)) return
              checks ??= vouched
              reached.set(i, offset)
              advance()
              digester.uptoThen(i, i * partSize, offset, (sha256) => {
                // A checkpoint told after its part was finished (and recorded whole) says nothing new.
                if (done.has(i)) return
                under.set(i, { bytes: offset - i * partSize, sha256 })
                moved = true
              })
            }
          })
          yield* Effect.forkScoped(Effect.repeat(recordMoved, Schedule.spaced(Duration.millis(250))))
          // Interrupted or failed: what is durable by then is recorded, for the next run (once the
          // digests of the last checkpoints are in).
          yield* Effect.addFinalizer(() => Effect.zipRight(digester.idle, recordMoved))
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
          // A part that fails (after its retries) starts no new ones, but the parts under way finish
          // and are recorded: a rerun then has less to fetch. An interruption stops them all at once
          // (what they have on the device is recorded as the scope closes).
          let failure: Cause.Cause<StorageError.StorageError> | undefined
          yield* Effect.forEach(
            Array.from({ length: count }, (_, i) => i).filter((i) => !done.has(i)),
            (i) => {
              if (failure !== undefined) return Effect.void
              const start = i * partSize
              const end = Math.min(entry.size, start + partSize)
              const prefix = prefixes.get(i)
              return Effect.flatMap(
                retrying(
                  location,
                  // Each attempt goes on from the part's last checkpoint (its bytes before it are on the
                  // device, and the part's digest, computed from the file, has not gone past it).
                  Effect.suspend(() => {
                    const from = reached.get(i) ?? start + (prefix?.bytes ?? 0)
                    // One stream from the start is a whole GET (its answer vouches for the object's digests).
                    const whole = count === 1 && from === 0
                    return fetchRange(client, entry, { file: data }, from, whole ? undefined : end, progress, {
                      checkpoint: checkpoint(i),
                      inPlace: true,
                      wholeChecks: false,
                      hash: false
                    })
                  })
                ),
                ({ checks: vouched }) =>
                  digester.upto(i, start, end).pipe(
                    Effect.flatMap((digest) =>
                      recordLock.withPermits(1)(useChecks(vouched)).pipe(
                        Effect.zipRight(recordPart(i, digest)),
                        Effect.zipRight(catchUp)
                      )
                    )
                  )
              ).pipe(
                Effect.catchAllCause((cause) =>
                  Cause.isInterruptedOnly(cause) ? Effect.failCause(cause) : Effect.sync(() => void (failure ??= cause))
                )
              )
            },
            { concurrency: settings.partConcurrency, discard: true }
          )
          if (failure !== undefined) return yield* Effect.failCause(failure)
          yield* useChecks(entry.checks ?? [])
          return yield* Effect.forEach(hashers ?? [], (hasher) => hasher.digest)
        }))
        const info = yield* Effect.mapError(fs.stat(data), errors.fromPlatformError(data, "stat"))
        if (Number(info.size) !== entry.size) {
          yield* cache.removeAll(data, record)
          return yield* mismatch("size", String(entry.size), String(info.size))
        }
        for (const [i, check] of (checks ?? []).entries()) {
          if (check.expected !== undefined && actual[i] !== check.expected.toLowerCase()) {
            yield* cache.removeAll(data, record)
            return yield* mismatch(check.label, check.expected, actual[i]!)
          }
        }
        // Verified: the follower reads it to its end (from its own descriptor, whatever the renames).
        follower?.done(entry.size)
        yield* cache.commit(data, target)
        yield* cache.removeAll(record)
        yield* progress.finish(entry.size)
        return {
          size: entry.size,
          digests: Array.from({ length: count }, (_, i) => done.get(i)!),
          partSize,
          checked: actual
        }
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
          if (check.expected !== undefined && actual[i] !== check.expected.toLowerCase()) {
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

    return { download, fetchIntoMemory, held, partialOf, retrying } as const
  })
