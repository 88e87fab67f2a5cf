/**
 * Following a storage's selection (issue 21): the storage's own `load`,
 * asked again at an interval, is the change signal, as cheap as each source
 * makes a warm load (Disk: a listing and a stat per file; HTTP: a conditional
 * request per URL; S3, GCS, Azure: one listing, ETags compared; the Hub: one
 * request for the revision's commit; OCI: one manifest request), and as
 * honest: a load is complete and verified, or it fails. A version is told by
 * the content of its files (sha256, re-computed only for a file whose
 * identity on disk changed), so a file touched but unchanged is no new
 * version, and a change is delivered only once it held still for `settle`.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Random from "effect/Random"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import type * as LoadedFile from "../LoadedFile.js"
import type { Version, WatchOptions } from "../Storage.js"
import type * as StorageError from "../StorageError.js"
import * as cache from "./cache.js"
import * as release from "./release.js"
import { Storage } from "./storage.js"

/** @internal */
export type Options = WatchOptions

// A check reads a source that may change under it (that is what it is for): what cannot be read is part of
// what it tells, never a failure of the check (nor a defect that would end the watch).
const statOf = (file: string): fs.BigIntStats | undefined => {
  try {
    return fs.statSync(file, { bigint: true, throwIfNoEntry: false })
  } catch {
    return undefined
  }
}
const codeOf = (error: unknown): string => String((error as NodeJS.ErrnoException).code ?? "unreadable")

/**
 * A folder's content, told by each file's relative name, size and modification time (not hashed). A
 * folder inside that cannot be listed, or a file gone between the listing and its stat, is told as such.
 */
const folderPrint = (folder: string): string => {
  const lines: Array<string> = []
  const walk = (relative: string): void => {
    let entries: Array<fs.Dirent>
    try {
      entries = fs.readdirSync(path.join(folder, relative), { withFileTypes: true })
    } catch (error) {
      lines.push(`${relative}/:${codeOf(error)}`)
      return
    }
    for (const entry of entries) {
      const name = path.join(relative, entry.name)
      if (entry.isDirectory()) {
        walk(name)
      } else if (entry.isFile()) {
        const info = statOf(path.join(folder, name))
        lines.push(info === undefined ? `${name}:gone` : `${name}:${info.size}:${info.mtimeNs}`)
      }
    }
  }
  walk("")
  return crypto.createHash("sha256").update(lines.sort().join("\n")).digest("hex")
}

/**
 * The watch's check of a storage: one load in a scope of its own, and the
 * digest of its files (each file hashed again only when its identity on disk
 * changed). `loadOnce(true)` is a check: files the load would read into
 * memory are taken by path. Exposed for the benchmark, which times checks.
 *
 * @internal
 */
export const makeChecker = (storage: Storage["Type"]) => {
  // What each file was last hashed as, by its identity on disk.
  const hashed = new Map<string, { readonly identity: string; readonly sha256: string }>()
  // A model held in memory is told by the object itself.
  const models = new WeakMap<object, number>()
  let modelCount = 0
  const digestOf = (files: ReadonlyArray<LoadedFile.LoadedFile>) =>
    Effect.gen(function*() {
      const parts: Array<string> = []
      const seen = new Set<string>()
      for (const file of files) {
        if (file._tag === "Model") {
          const model = file.model
          // An object is told by its identity; a plain value by itself.
          if ((typeof model !== "object" && typeof model !== "function") || model === null) {
            parts.push(`value:${typeof model}:${String(model)}`)
            continue
          }
          if (!models.has(model)) models.set(model, ++modelCount)
          parts.push(`model:${models.get(model)}`)
          continue
        }
        if (file._tag === "Bytes") {
          // Read from a file a check hashed, and unchanged since (the same identity after the read: any write
          // changes the ctime): that hash, not the bytes hashed again on the event loop.
          const info = statOf(file.path)
          const known = hashed.get(file.path)
          const sha256 = info !== undefined && known !== undefined && known.identity === cache.identityOfStats(info)
            ? known.sha256
            : crypto.createHash("sha256").update(file.bytes).digest("hex")
          parts.push(`${file.name}:${sha256}`)
          continue
        }
        const info = statOf(file.path)
        if (info === undefined) {
          parts.push(`${file.name}:gone`)
        } else if (info.isDirectory()) {
          parts.push(`${file.name}/:${folderPrint(file.path)}`)
        } else {
          const identity = cache.identityOfStats(info)
          const known = hashed.get(file.path)
          const sha256 = known !== undefined && known.identity === identity
            ? known.sha256
            : yield* Effect.orElseSucceed(cache.sha256OfFile(file.path), () => `unreadable ${identity}`)
          hashed.set(file.path, { identity, sha256 })
          seen.add(file.path)
          parts.push(`${file.name}:${sha256}`)
        }
      }
      // Only the files of the last load taken by path are remembered (a remote source's snapshots move).
      if (seen.size > 0) for (const known of hashed.keys()) if (!seen.has(known)) hashed.delete(known)
      return crypto.createHash("sha256").update(parts.join("\n")).digest("hex")
    })

  // One load in a scope of its own: its files and their digest (the scope closed on failure). A check
  // takes the files by path where the load would read them into memory (no memory, no budget spent):
  // `byPath` says a delivery must load them again.
  const loadOnce = (check: boolean) =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const checking = check ? { byPath: false } : undefined
      const exit = yield* Effect.exit(
        Effect.flatMap(Scope.extend(storage.load, scope), (files) =>
          Effect.map(digestOf(files), (digest) => ({ files, digest, scope, byPath: checking?.byPath === true }))).pipe(
            Effect.locally(release.checking, checking)
          )
      )
      if (Exit.isFailure(exit)) yield* Scope.close(scope, exit)
      return yield* exit
    })
  return { loadOnce }
}

/**
 * The versions of the storage's selection, as a Stream (see the module's
 * doc). Each version's files stay valid until the next version is delivered
 * or its `release` runs (its load's scope is closed then: raw bytes
 * released); at most two are alive at once.
 *
 * @internal
 */
export const watch = (options: Options = {}): Stream.Stream<Version, StorageError.StorageError, Storage> =>
  Stream.unwrapScoped(Effect.gen(function*() {
    const storage = yield* Storage
    const interval = Duration.decode(options.interval ?? "30 seconds")
    const settle = Duration.decode(options.settle ?? "2 seconds")
    const { loadOnce } = makeChecker(storage)
    let delivered: Scope.CloseableScope | undefined
    let lastDigest: string | undefined
    let version = 0
    yield* Effect.addFinalizer(() => (delivered === undefined ? Effect.void : Scope.close(delivered, Exit.void)))

    type Seen = Effect.Effect.Success<ReturnType<typeof loadOnce>>
    const drop = (seen: Seen) => Scope.close(seen.scope, Exit.void)

    // What may have changed the source (file-system events): a check at once instead of at the interval.
    const hints = storage.changed === undefined ? undefined : yield* Queue.sliding<void>(1)
    if (hints !== undefined && storage.changed !== undefined) {
      yield* storage.changed.pipe(
        Stream.runForEach(() => Queue.offer(hints, undefined)),
        Effect.catchAllCause((cause) => Effect.logDebug("Watching the storage: no events from its source; polling it", cause)),
        Effect.forkScoped
      )
    }
    // Changes before a check begins are the check's to see.
    const check = Effect.zipRight(hints === undefined ? Effect.void : Queue.takeAll(hints), loadOnce(true))
    const pause = (duration: Duration.Duration) =>
      Effect.flatMap(Random.nextRange(0.9, 1.1), (jitter) => {
        const sleep = Effect.sleep(Duration.millis(Duration.toMillis(duration) * jitter))
        return hints === undefined ? sleep : Effect.raceFirst(sleep, Queue.take(hints))
      })

    // A failed check: the stream's end ("fail"), or a warning and the next interval.
    const failed = (error: StorageError.StorageError) =>
      options.onError === "fail"
        ? Effect.fail(error)
        : Effect.as(
          Effect.logWarning(`Watching the storage: a check failed (${error.message}); trying again in ${Duration.format(interval)}`),
          Option.none<Seen>()
        )
    // A change, once it held still for `settle` (a file being written is never delivered half-written).
    const settled = (candidate: Seen): Effect.Effect<Option.Option<Seen>, StorageError.StorageError> =>
      Effect.gen(function*() {
        yield* drop(candidate)
        yield* Effect.sleep(settle)
        const again = yield* Effect.either(check)
        if (again._tag === "Left") return yield* failed(again.left)
        return again.right.digest === candidate.digest ? Option.some(again.right) : yield* settled(again.right)
      })
    // The next version: asked for at the interval (or at an event) until the selection changed and held
    // still, then loaded as the storage delivers it. The first: at once.
    const next = Effect.gen(function*() {
      let wait = version > 0
      for (;;) {
        if (wait) yield* pause(interval)
        wait = true
        const seen = yield* Effect.either(check)
        if (seen._tag === "Left") {
          yield* failed(seen.left)
          continue
        }
        if (seen.right.digest === lastDigest) {
          yield* drop(seen.right)
          continue
        }
        const stable = yield* settled(seen.right)
        if (Option.isNone(stable)) continue
        if (stable.value.digest === lastDigest) {
          yield* drop(stable.value)
          continue
        }
        let chosen = stable.value
        if (chosen.byPath) {
          // Checked by path: now read as the storage delivers it (into memory).
          yield* drop(chosen)
          const loaded = yield* Effect.either(loadOnce(false))
          if (loaded._tag === "Left") {
            yield* failed(loaded.left)
            continue
          }
          if (loaded.right.digest !== stable.value.digest) {
            // It changed again meanwhile: checked once more, at once.
            yield* drop(loaded.right)
            wait = false
            continue
          }
          chosen = loaded.right
        }
        // The version before is released now: its reader pulled this one.
        const before = delivered
        delivered = chosen.scope
        lastDigest = chosen.digest
        if (before !== undefined) yield* Scope.close(before, Exit.void)
        version++
        yield* Effect.logDebug(`Watching the storage: version ${version} (${chosen.digest.slice(0, 12)})`)
        return {
          version,
          files: chosen.files,
          digest: chosen.digest,
          release: Scope.close(chosen.scope, Exit.void)
        } satisfies Version
      }
    })
    return Stream.repeatEffect(next)
  }))
