import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as crypto from "node:crypto"
import * as fsSync from "node:fs"
import * as LoadedFile from "../LoadedFile.js"
import * as StorageError from "../StorageError.js"
import * as cache from "./cache.js"
import * as errors from "./errors.js"
import * as mask_ from "./mask.js"
import * as release from "./release.js"
import * as transfer from "./transfer.js"
import * as engine from "./engine.js"

/** @internal */
export type Listed = engine.Listed
/** @internal */
export type Check = engine.Check
/** @internal */
export type Got = engine.Got
/** @internal */
export type Settings = engine.Settings
/** @internal */
export const settingsOf = engine.settingsOf
type Entry = engine.Entry

/**
 * What a remote source supplies to the engine: a client for one load, a
 * listing, and (ranged) reads pinned to a listed version. Everything else
 * (selection, staging, verification, resume, lock, snapshots, offline) is
 * the engine's, the same for every source.
 *
 * @internal
 */
export interface Source<C> extends engine.Reader<C> {
  /** The cache's folder for this source (`s3`, `azure`, `hf`), and what keys the entry in it. */
  readonly folder: string
  readonly cacheKey: ReadonlyArray<string>
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
  /**
   * Objects named by their content (an OCI blob's digest): kept once in a
   * store of their own (`<cache>/<folder>/blobs/<store>`), shared by every
   * reference of the source that lists them (tags, repositories of one
   * registry), so that a second one links them rather than fetch them again.
   * `keyOf` gives the content's name (undefined: not stored).
   */
  readonly contentStore?: {
    readonly store: string
    readonly keyOf: (entry: Listed) => string | undefined
  } | undefined
  readonly connect: Effect.Effect<C, StorageError.StorageError, Scope.Scope>
  readonly list: (client: C) => Effect.Effect<ReadonlyArray<Listed>, StorageError.StorageError | transfer.Retryable>
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


/** @internal */
export interface Delivered {
  readonly file: string
  readonly name: string
  readonly size: number
  /** Where it came from (`s3://bucket/key`), in messages. */
  readonly location: string
}

const namesShown = 10


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
        size: entry.size,
        location: source.locationOf(entry.key)
      }))

    const partialsDir = path.join(entryDir, "partials")
    const { download, fetchIntoMemory, held, retrying } = yield* engine.make(source, settings, partialsDir)
    // A whole object fetched and verified by a load that did not publish (interrupted, or failed
    // on another object): kept, linked, with what it was, so that the next load does not fetch it again.
    const finishedOf = (entry: Entry) => {
      const base = path.join(partialsDir, cache.keyOf(entry.key))
      return { data: `${base}.done`, record: `${base}.done.json` }
    }

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
        const kept = yield* Effect.forEach(toFetch, held)
        yield* cache.ensureSpace(
          entryDir,
          toFetch.reduce((sum, entry) => sum + entry.size, 0) - kept.reduce((sum, bytes) => sum + bytes, 0)
        )

        // A new snapshot: staged whole, then made visible at once.
        // The Clock's time names it; a random part keeps names apart between processes.
        const id = `${(yield* Clock.currentTimeMillis).toString(36)}-${crypto.randomUUID().slice(0, 8)}`
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
        // An object of the content store (fetched by another reference), still intact: linked.
        const storeDir = source.contentStore === undefined
          ? undefined
          : path.join(settings.cacheDir, source.folder, "blobs", cache.keyOf(source.contentStore.store))
        const storedOf = (entry: Entry) => {
          const key = source.contentStore?.keyOf(entry)
          return storeDir === undefined || key === undefined
            ? undefined
            : { data: path.join(storeDir, cache.safeName(key)), record: path.join(storeDir, `${cache.safeName(key)}.json`) }
        }
        const reuseStored = (entry: Entry, target: string) =>
          Effect.gen(function*() {
            const stored = storedOf(entry)
            if (stored === undefined) return Option.none<Recorded>()
            const held = yield* cache.readJson<Recorded>(stored.record)
            if (Option.isNone(held) || held.value.size !== entry.size) return Option.none<Recorded>()
            const checked = yield* check(stored.data, held.value)
            if (checked._tag === "Left") {
              yield* cache.removeAll(stored.data, stored.record)
              return Option.none<Recorded>()
            }
            yield* cache.ensureDir(path.dirname(target))
            const linked = yield* Effect.isSuccess(fs.link(stored.data, target))
            if (!linked) return Option.none<Recorded>()
            yield* tracker.file(source.locationOf(entry.key), entry.name).cached(entry.size)
            yield* Effect.logDebug(`${errors.cap(source.locationOf(entry.key))} is in the cache already (another reference's): linked`)
            return Option.some<Recorded>({ ...entry, digests: held.value.digests, partSize: held.value.partSize, identity: undefined })
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
          return Effect.flatMap(
            Effect.flatMap(reuseFinished(entry, target), (reused) => Option.isSome(reused) ? Effect.succeed(reused) : reuseStored(entry, target)),
            (reused) =>
            Option.isSome(reused)
              ? Effect.succeed(reused.value)
              : Effect.map(
                Effect.zipRight(
                  // The staging folder exists; a nested name needs its folders.
                  entry.name.includes("/") ? cache.ensureDir(path.dirname(target)) : Effect.void,
                  download(client, entry, target, tracker)
                ),
                (verified): Recorded => {
                  const recorded = { ...entry, ...verified }
                  fetched.push({ target, recorded })
                  return recorded
                }
              ))
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
        // The content store: every object of the snapshot that is named by its content is linked there
        // (before the identities are read: a link changes them); then objects no snapshot links any
        // more (one link left: the store's own) go.
        if (storeDir !== undefined) {
          yield* cache.ensureDir(storeDir)
          for (const entry of recorded) {
            const stored = storedOf(entry)
            if (stored === undefined || fsSync.existsSync(stored.data)) continue
            yield* Effect.ignore(fs.link(fileOf(id, entry), stored.data))
          }
        }
        const manifest = yield* withIdentities({ version: 2, snapshot: id, files: recorded })
        yield* cache.writeJsonAtomic(manifestFile, manifest)
        if (storeDir !== undefined) {
          for (const entry of manifest.files) {
            const stored = storedOf(entry)
            if (stored !== undefined) yield* Effect.ignore(cache.writeJsonHint(stored.record, entry))
          }
        }
        // Older snapshots go; the one just replaced stays, for readers that still use its paths.
        const keep = new Set([id, ...Option.match(current, { onNone: () => [], onSome: (m) => [m.snapshot] })])
        const snapshots = yield* Effect.orElseSucceed(fs.readDirectory(path.join(entryDir, "snapshots")), () => [])
        yield* cache.removeAll(
          ...snapshots.filter((name) => !keep.has(name)).map((name) => path.join(entryDir, "snapshots", name))
        )
        if (storeDir !== undefined) {
          const unlinked = (yield* Effect.orElseSucceed(fs.readDirectory(storeDir), () => []))
            .filter((name) => !name.endsWith(".json"))
            .filter((name) => (fsSync.statSync(path.join(storeDir, name), { throwIfNoEntry: false })?.nlink ?? 2) === 1)
          yield* cache.removeAll(...unlinked.flatMap((name) => [path.join(storeDir, name), path.join(storeDir, `${name}.json`)]))
        }
        return fromManifest(manifest)
      }))
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

    // The files (all of the selection, or those `pick` keeps) into memory, their size reserved first.
    const intoMemory = (pick: (selected: ReadonlyArray<Entry>) => Effect.Effect<ReadonlyArray<Entry>, StorageError.StorageError>) =>
      Effect.gen(function*() {
        const tracker = yield* transfer.makeTracker
        const client = yield* source.connect
        const entries = yield* Effect.flatMap(Effect.flatMap(retrying(base, source.list(client)), select), pick)
        yield* reserveFor(entries, tracker)
        return yield* Effect.forEach(entries, (entry) => fetchIntoMemory(client, entry, tracker), {
          concurrency: settings.concurrency
        })
      })

    const loadBytes: Effect.Effect<ReadonlyArray<LoadedFile.Bytes>, StorageError.StorageError, Scope.Scope> = intoMemory(
      Effect.succeed
    )

    // One file of the selection, named by its location (as a `Bytes` file of `loadBytes` names it).
    const loadBytesOf = (location: string): Option.Option<Effect.Effect<LoadedFile.Bytes, StorageError.StorageError, Scope.Scope>> =>
      !location.startsWith(source.locationOf(""))
        ? Option.none()
        : Option.some(Effect.map(
          intoMemory((selected) => {
            const entry = selected.find((entry) => source.locationOf(entry.key) === location)
            return entry === undefined
              ? Effect.fail(new StorageError.RemoteNotFound({ location, reason: "not among the files this storage selects" }))
              : Effect.succeed([entry])
          }),
          (files) => files[0]!
        ))

    return { load, loadBytes, loadBytesOf, base, entryDir, unpacker: settings.unpacker } as const
  })
