/**
 * Unpacking, for every storage (issue 20): the archives a load delivers
 * (`.tar`, `.tar.gz`/`.tgz`, `.zip`) become the files they hold, which the
 * storage's mask then selects, named by their paths inside the archive.
 *
 * Each archive is unpacked under the rules of `unpack.ts` into a staging
 * folder of the cache, its sha256 computed as it is read; the tree is then
 * renamed into place under that digest (`<cache>/unpacked/<sha256>/tree`),
 * all at once, its files flushed first. A load of an archive it has seen
 * (same file, same identity on disk) finds its digest in an index and uses
 * the tree as it is, once each file's identity is checked: a warm load does
 * not unpack again. Two loads (or processes) that unpack the same archive at
 * once both do the work; the first rename wins and the other's staging goes.
 * Trees no index names any more (the current and the previous digest of
 * each archive, for readers that still use its paths) are removed.
 *
 * @internal
 */
import * as Path from "@effect/platform/Path"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { Readable } from "node:stream"
import * as StorageError from "../StorageError.js"
import * as cache from "./cache.js"
import * as mask_ from "./mask.js"
import type * as options_ from "./options.js"
import type * as Schema from "effect/Schema"
import type * as unpack from "./unpack.js"
import type * as tree from "./tree.js"
import * as untar from "./untar.js"
import * as unzip from "./unzip.js"

/** @internal */
export type Kwargs = Schema.Struct.Type<typeof options_.unpackFields>

/** @internal */
export type Format = "tar" | "zip"

// Any case, spelled out: the pattern is also joined to a user's mask, whose flags it must not change.
const archiveNames = /\.(?:[tT][aA][rR](?:\.(?:[gG][zZ]|[zZ][sS][tT]))?|[tT][gG][zZ]|[tT][zZ][sS][tT]|[zZ][iI][pP])$/

/** The format a file is read as, under `unpack` (none: delivered as it is). @internal */
export const formatOf = (unpack: Kwargs["unpack"], name: string): Format | undefined => {
  if (unpack === "none") return undefined
  if (unpack === "zip") return "zip"
  if (unpack !== "auto") return "tar"
  if (!archiveNames.test(name)) return undefined
  return /\.zip$/i.test(name) ? "zip" : "tar"
}

/**
 * The mask a storage selects its files with: with unpacking on, the archives
 * (all files, for an explicit format) besides those the mask selects; the
 * mask itself then selects among the archives' files.
 *
 * @internal
 */
export const sourceMask = (unpack: Kwargs["unpack"], mask: RegExp): RegExp => {
  if (unpack === "none") return mask
  const shown = mask_.sourceOf(mask)
  if (unpack !== "auto") return mask_.shownAs(/(?:)/, `every file (unpack: ${unpack})`)
  return mask_.shownAs(
    new RegExp(`(?:${archiveNames.source})|(?:${mask.source})`, mask.flags),
    `${shown} (or an archive: .tar, .tar.gz, .tgz, .tar.zst, .zip)`
  )
}

/** A file a load delivers. @internal */
export interface Delivered {
  readonly file: string
  readonly name: string
  readonly size: number
  /** Where it came from, in messages (default: the file). */
  readonly location?: string | undefined
}

/** What an unpacked tree's record holds: each file (not folder) of the tree, with its identity. */
interface TreeRecord {
  readonly version: 1
  readonly files: ReadonlyArray<{ readonly name: string; readonly size: number; readonly identity: string }>
}

/** What the index holds of one archive file: its identity when it was hashed, and its digest. */
interface IndexRecord {
  /** The tree's folder name: the archive's sha256 (then, for a part of it, a key of the part). */
  readonly identity: string
  readonly sha256: string
  /** The digest before this one: its tree stays, for readers that still use its paths. */
  readonly previous?: string | undefined
}

const namesShown = 10

/**
 * The identity of a file of a tree: its size, modification time and inode.
 * Not its ctime (as the cache's files have), which every hard link to the
 * file changes: placing a tree's files (`fetch --to`) links them. A write
 * changes the modification time; a tree is never written after it is made.
 */
const fileIdentityOf = (file: string): string | undefined => {
  const info = fs.statSync(file, { bigint: true, throwIfNoEntry: false })
  return info === undefined ? undefined : `${info.size}:${info.mtimeNs}:${info.ino}`
}

/**
 * The names of an image layer that bear on `within` ("models", "opt/models"):
 * the names under it, and the whiteouts of it and of the folders above it
 * (`.wh.models`, `opt/.wh..wh..opq`), by which a layer removes what the
 * layers below it had there.
 */
const keepWithin = (within: string) => {
  const parts = within.split("/")
  const whiteouts = new Set<string>()
  for (let i = 0; i < parts.length; i++) {
    const parent = parts.slice(0, i).join("/")
    const prefix = parent === "" ? "" : `${parent}/`
    whiteouts.add(`${prefix}.wh.${parts[i]}`)
    whiteouts.add(`${prefix}.wh..wh..opq`)
  }
  return (name: string) => {
    const clean = name.replace(/\/+$/, "")
    return clean === within || clean.startsWith(`${within}/`) || whiteouts.has(clean)
  }
}

/** A staging folder this old is an orphan (its process died). */
const orphanAfterMs = 24 * 60 * 60 * 1000

/** An unpacked tree in place: its archive's sha256 and what it holds. @internal */
export interface Tree {
  readonly sha256: string
  readonly record: TreeRecord
  /** The folder its files are in. */
  readonly folder: string
}

/**
 * An archive followed as it is downloaded (tar, tar.gz): `advance(upto)`
 * says bytes [0, upto) of the file are written (flushed), `done(size)` that
 * the download is complete and verified, `abandon()` that it failed (what was
 * unpacked goes).
 *
 * @internal
 */
export interface Follower {
  readonly advance: (upto: number) => void
  readonly done: (size: number) => void
  readonly abandon: () => void
}

/**
 * The unpacker of one storage: where its trees are, how an archive becomes
 * one (`treeFor`), and (for tar) how a download is followed and unpacked as
 * it arrives (`follow`, picked up by `treeFor` once the file is delivered).
 *
 * @internal
 */
export interface Unpacker {
  readonly unpack: Kwargs["unpack"]
  /** A follower for an archive about to be downloaded into `data` (undefined: not a tar, unpacked after). */
  readonly follow: (entry: { readonly name: string; readonly size: number }, location: string) => ((data: string) => Follower) | undefined
  /** `within`: only that path of the archive, and the whiteouts that reach it (an image layer's `/models`). */
  readonly treeFor: (archive: Delivered, format: Format, within?: string) => Effect.Effect<Tree, StorageError.StorageError>
  /** Followers whose archive no load delivered (it failed): what they unpacked goes. */
  readonly discardPending: Effect.Effect<void>
}

/** @internal */
export const makeUnpacker = (options: {
  readonly kwargs: Kwargs
  readonly cacheDir: string
  readonly verify: cache.VerifyMode
}): Unpacker => {
  const { kwargs } = options
  const root = path.join(options.cacheDir, "unpacked")
  const limits: unpack.Limits = {
    maxEntries: kwargs.unpack_max_entries,
    maxBytes: kwargs.unpack_max_bytes,
    maxRatio: kwargs.unpack_max_ratio
  }
  const treeOf = (sha256: string) => path.join(root, sha256)

  // A tree whose record is there and whose every file is as it was made.
  const intact = (sha256: string, warn = true) =>
    Effect.gen(function*() {
      const record = yield* cache.readJson<TreeRecord>(path.join(treeOf(sha256), "record.json"))
      if (Option.isNone(record) || record.value.version !== 1) return Option.none<TreeRecord>()
      for (const file of record.value.files) {
        const identity = fileIdentityOf(path.join(treeOf(sha256), "tree", ...file.name.split("/")))
        if (identity !== file.identity) {
          if (!warn) return Option.none<TreeRecord>()
          yield* Effect.logWarning(`The unpacked file ${path.join(treeOf(sha256), "tree", file.name)} changed on disk: unpacking again`)
          return Option.none<TreeRecord>()
        }
      }
      return record
    })

  // What a reader's failure is, for the caller: a refusal, an unreadable archive, a failed write.
  const failureOf = (location: string, format: Format, folder: string) =>
  (failure: tree.Failure | StorageError.ReadFailed): StorageError.StorageError => {
    switch (failure._tag) {
      case "Refused":
        return new StorageError.ArchiveRefused({
          location,
          ...(failure.refusal.entry === undefined ? {} : { entry: failure.refusal.entry }),
          rule: failure.refusal.rule,
          reason: failure.refusal.reason,
          ...(failure.refusal.limit === undefined ? {} : { limit: failure.refusal.limit })
        })
      case "Broken":
        return new StorageError.ArchiveUnreadable({ location, format, reason: failure.reason })
      case "Unwritable":
        return new StorageError.WriteFailed({
          path: folder,
          operation: `unpack ${location} into`,
          reason: failure.reason,
          ...(failure.code === undefined ? {} : { code: failure.code })
        })
      default:
        return failure
    }
  }

  // The record of a staged tree (every file, links followed: they stay inside it, with its identity
  // now), written beside it.
  const recordOf = (staging: string, admitted: ReadonlyArray<unpack.Admitted>) =>
    Effect.gen(function*() {
      const folder = path.join(staging, "tree")
      const files: Array<TreeRecord["files"][number]> = []
      for (const { entry, path: inside } of admitted) {
        if (entry.type === "directory") continue
        const at = path.join(folder, ...inside.split("/"))
        const info = fs.statSync(at, { bigint: true, throwIfNoEntry: false })
        if (info === undefined || !info.isFile()) continue
        files.push({ name: inside, size: Number(info.size), identity: fileIdentityOf(at)! })
      }
      const record: TreeRecord = { version: 1, files }
      yield* cache.writeJsonAtomic(path.join(staging, "record.json"), record)
      return record
    })

  // An archive file into a staging folder: its sha256 (of the bytes read) and what it held.
  const unpackInto = (archive: Delivered, format: Format, staging: string, size: number, within?: string) => {
    const folder = path.join(staging, "tree")
    const read = format === "zip"
      ? Effect.zip(cache.sha256OfFile(archive.file), unzip.unzip({ file: archive.file, folder, limits }), { concurrent: true })
      : Effect.suspend(() => {
        const hash = crypto.createHash("sha256")
        const body = fs.createReadStream(archive.file, { highWaterMark: 1024 * 1024 })
        body.on("data", (chunk) => void hash.update(chunk))
        return Effect.map(
          untar.untar({ body, folder, limits, archiveSize: size, keep: within === undefined ? undefined : keepWithin(within) }),
          (admitted) => [hash.digest("hex"), admitted] as const
        )
      })
    return Effect.mapError(read, failureOf(archive.location ?? archive.file, format, folder))
  }

  // One archive's tree: the one its index names when it is intact; else the one unpacked as it was
  // downloaded (a tar this load fetched), or unpacked now; then put in place.
  const treeFor = (archive: Delivered, format: Format, within?: string): Effect.Effect<Tree, StorageError.StorageError> =>
    Effect.gen(function*() {
      const location = archive.location ?? archive.file
      // A part of the archive (an image layer's path) is a tree of its own, named after the archive and the part.
      const idOf = (sha256: string) => (within === undefined ? sha256 : `${sha256}-${cache.keyOf(within).slice(0, 16)}`)
      const indexFile = path.join(root, "index", `${cache.keyOf(archive.file, format, within ?? "")}.json`)
      const streamed = within === undefined ? pending.get(location) : undefined
      if (streamed !== undefined) pending.delete(location)
      const identity = yield* cache.identityOf(archive.file)
      if (Option.isNone(identity)) {
        streamed?.abandon()
        return yield* new StorageError.ReadFailed({ path: archive.file, operation: "unpack", reason: "the archive is gone" })
      }
      const index = yield* cache.readJson<IndexRecord>(indexFile)
      if (streamed === undefined && Option.isSome(index) && index.value.identity === identity.value && options.verify === "changed") {
        const record = yield* intact(index.value.sha256)
        if (Option.isSome(record)) {
          yield* Effect.logDebug(`${location} was unpacked before (sha256 ${index.value.sha256}): not unpacked again`)
          return { sha256: index.value.sha256, record: record.value, folder: path.join(treeOf(index.value.sha256), "tree") }
        }
      }
      let staging: string
      let read: readonly [string, ReadonlyArray<unpack.Admitted>]
      // Unpacked as it arrived; if that was stopped, unpacked from the file now.
      const result = streamed === undefined ? Option.none() : yield* Effect.promise(() => streamed.result)
      if (streamed !== undefined && Option.isNone(result)) yield* cache.removeAll(streamed.staging)
      if (streamed !== undefined && Option.isSome(result)) {
        staging = streamed.staging
        if (Either.isLeft(result.value)) {
          yield* cache.removeAll(staging)
          return yield* Effect.fail(failureOf(location, format, path.join(staging, "tree"))(result.value.left))
        }
        read = result.value.right
        yield* Effect.logDebug(`${location} was unpacked as it arrived (sha256 ${read[0]})`)
      } else {
        yield* cache.ensureDir(root)
        const id = `${(yield* Clock.currentTimeMillis).toString(36)}-${crypto.randomUUID().slice(0, 8)}`
        staging = path.join(root, `staging-${id}`)
        yield* cache.ensureDir(staging)
        read = yield* unpackInto(archive, format, staging, Number(identity.value.split(":")[0]), within).pipe(
          Effect.onExit((exit) => exit._tag === "Failure" ? cache.removeAll(staging) : Effect.void)
        )
        // The archive must not have changed while it was read (a file being written by someone else).
        const after = yield* cache.identityOf(archive.file)
        if (Option.getOrUndefined(after) !== identity.value) {
          yield* cache.removeAll(staging)
          return yield* new StorageError.ReadFailed({
            path: archive.file,
            operation: "unpack",
            reason: "the archive changed while it was unpacked: load again once it is complete"
          })
        }
      }
      const [digest, admitted] = read
      const sha256 = idOf(digest)
      const made = yield* Effect.onError(recordOf(staging, admitted), () => cache.removeAll(staging))
      const final = treeOf(sha256)
      const existing = yield* intact(sha256, false)
      if (Option.isSome(existing)) {
        // Unpacked by another load meanwhile (or before, under another name): that tree is used.
        yield* cache.removeAll(staging)
      } else {
        yield* cache.removeAll(final)
        yield* Effect.catchAll(cache.commit(staging, final, { flushed: true }), (error) =>
          // Another load renamed its tree into place first.
          Effect.flatMap(intact(sha256, false), (won) => Option.isSome(won) ? cache.removeAll(staging) : Effect.fail(error)))
      }
      const before = Option.getOrUndefined(index)
      yield* cache.ensureDir(path.dirname(indexFile))
      yield* cache.writeJsonAtomic(indexFile, {
        identity: identity.value,
        sha256,
        ...(before !== undefined && before.sha256 !== sha256
          ? { previous: before.sha256 }
          : before?.previous === undefined
          ? {}
          : { previous: before.previous })
      } satisfies IndexRecord)
      yield* collect
      return { sha256, record: Option.getOrElse(existing, () => made), folder: path.join(final, "tree") }
    })

  // Trees no index names (as current or previous), and orphaned staging folders, go.
  const collect = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const names = yield* Effect.sync(() => fs.readdirSync(root))
    const indexDir = path.join(root, "index")
    const kept = new Set<string>()
    for (const name of yield* Effect.sync(() => (fs.existsSync(indexDir) ? fs.readdirSync(indexDir) : []))) {
      const record = yield* cache.readJson<IndexRecord>(path.join(indexDir, name))
      if (Option.isSome(record)) {
        kept.add(record.value.sha256)
        if (record.value.previous !== undefined) kept.add(record.value.previous)
      }
    }
    const gone = names.filter((name) =>
      name.startsWith("staging-")
        ? now - (fs.statSync(path.join(root, name), { throwIfNoEntry: false })?.mtimeMs ?? now) > orphanAfterMs
        : /^[0-9a-f]{64}(?:-[0-9a-f]{16})?$/.test(name) && !kept.has(name)
    )
    yield* cache.removeAll(...gone.map((name) => path.join(root, name)))
  })

  // Downloads being unpacked as they arrive, by location: picked up by treeFor once delivered.
  const pending = new Map<string, {
    readonly staging: string
    /** None: it was stopped (abandoned, or the process is shutting down). */
    readonly result: Promise<Option.Option<Either.Either<readonly [string, ReadonlyArray<unpack.Admitted>], tree.Failure>>>
    readonly abandon: () => void
  }>()

  const follow: Unpacker["follow"] = (entry, location) => {
    if (formatOf(kwargs.unpack, entry.name) !== "tar") return undefined
    return (data) => {
      pending.get(location)?.abandon()
      fs.mkdirSync(root, { recursive: true })
      const staging = path.join(root, `staging-${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 8)}`)
      fs.mkdirSync(staging)
      const body = new Following(data)
      const hash = crypto.createHash("sha256")
      body.on("data", (chunk: Buffer) => void hash.update(chunk))
      const fiber = Effect.runFork(
        Effect.either(Effect.map(
          untar.untar({ body, folder: path.join(staging, "tree"), limits, archiveSize: entry.size }),
          (admitted) => [hash.digest("hex"), admitted] as const
        ))
      )
      let abandoned = false
      const abandon = () => {
        if (abandoned) return
        abandoned = true
        if (pending.get(location)?.staging === staging) pending.delete(location)
        body.destroy()
        fiber.unsafeInterruptAsFork(fiber.id())
        void Effect.runPromise(Fiber.await(fiber)).finally(() => fs.rmSync(staging, { recursive: true, force: true }))
      }
      const result = Effect.runPromise(Effect.map(Fiber.await(fiber), Exit.getOrElse(() => undefined))).then(Option.fromNullable)
      pending.set(location, { staging, result, abandon })
      return {
        advance: (upto) => body.advance(upto),
        done: (size) => body.done(size),
        abandon
      }
    }
  }

  const discardPending = Effect.sync(() => {
    for (const one of [...pending.values()]) one.abandon()
  })

  return { unpack: kwargs.unpack, follow, treeFor, discardPending }
}

/**
 * A file being written, read as a stream as far as it is written: `advance`
 * moves the end that may be read, `done` says where the file ends.
 */
class Following extends Readable {
  private readonly fd: number
  private position = 0
  private available = 0
  private end: number | undefined
  private reading = false
  private wanted = false
  constructor(file: string) {
    super({ highWaterMark: 1024 * 1024 })
    // Opened now: the file may be renamed into place before it is read to its end.
    this.fd = fs.openSync(file, "r")
  }
  advance(upto: number) {
    if (upto <= this.available) return
    this.available = upto
    if (this.wanted) this.pump()
  }
  done(size: number) {
    this.end = size
    this.available = Math.max(this.available, size)
    if (this.wanted) this.pump()
  }
  override _read() {
    this.wanted = true
    this.pump()
  }
  private pump() {
    if (this.reading || this.destroyed) return
    if (this.end !== undefined && this.position >= this.end) return void this.push(null)
    if (this.position >= this.available) return
    this.reading = true
    const buffer = Buffer.allocUnsafe(Math.min(1024 * 1024, this.available - this.position))
    fs.read(this.fd, buffer, 0, buffer.byteLength, this.position, (error, bytes) => {
      this.reading = false
      if (this.destroyed) return
      if (error !== null) return void this.destroy(error)
      if (bytes === 0) return void this.destroy(new Error(`the file ends at ${this.position}, before ${this.available}`))
      this.position += bytes
      this.wanted = this.push(buffer.subarray(0, bytes))
      if (this.wanted) this.pump()
    })
  }
  override _destroy(error: Error | null, callback: (error?: Error | null) => void) {
    fs.close(this.fd, () => callback(error))
  }
}

/**
 * The unpacking stage of a load: the files it delivers in, the files to hand
 * over out (archives replaced by the files they hold that the mask selects;
 * other files as they are). Without an unpacker, the files as they are.
 *
 * @internal
 */
export const stage = (
  unpacker: Unpacker | undefined,
  storageType: string,
  /** Selects among the archives' files (undefined: all of them). */
  contents: { readonly mask: RegExp | undefined; readonly maskField: string }
) => {
  const select = (archive: Delivered, tree: Tree) =>
    Effect.gen(function*() {
      const names = tree.record.files.map((file) => file.name)
      const chosen = new Set(
        contents.mask === undefined
          ? names
          : yield* mask_.select(contents.mask, names, { storageType, field: contents.maskField })
      )
      if (chosen.size === 0) {
        return yield* new StorageError.NothingMatched({
          folder: `${archive.location ?? archive.file} (unpacked)`,
          mask: mask_.sourceOf(contents.mask!),
          names: [...names].sort().slice(0, namesShown),
          entries: names.length
        })
      }
      return tree.record.files
        .filter((file) => chosen.has(file.name))
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
        .map((file): Delivered => ({
          file: path.join(tree.folder, ...file.name.split("/")),
          name: file.name,
          size: file.size,
          location: `${archive.location ?? archive.file}#${file.name}`
        }))
    })

  return (files: ReadonlyArray<Delivered>): Effect.Effect<ReadonlyArray<Delivered>, StorageError.StorageError> =>
    unpacker === undefined || unpacker.unpack === "none"
      ? Effect.succeed(files)
      : Effect.gen(function*() {
        const out: Array<Delivered> = []
        const from = new Map<string, string>()
        for (const file of files) {
          const format = formatOf(unpacker.unpack, file.name)
          const delivered = format === undefined
            ? [file]
            : yield* Effect.flatMap(unpacker.treeFor(file, format), (tree) => select(file, tree))
          for (const one of delivered) {
            const other = from.get(one.name)
            if (other !== undefined) {
              return yield* new StorageError.ArchiveRefused({
                location: file.location ?? file.file,
                entry: one.name,
                rule: "duplicate",
                reason: `${one.name} is delivered twice: by ${other} and by ${file.location ?? file.file}`
              })
            }
            from.set(one.name, file.location ?? file.file)
            out.push(one)
          }
        }
        return out
      }).pipe(Effect.ensuring(unpacker.discardPending))
}

/**
 * The unpacker of a storage from its kwargs (none with `unpack: "none"`):
 * the cache folder (the default one when not given) and the verification
 * mode it shares with the cache.
 *
 * @internal
 */
export const unpackerOf = (
  kwargs: Kwargs & { readonly cache_dir?: string | undefined; readonly verify?: cache.VerifyMode | undefined }
): Effect.Effect<Unpacker | undefined, never, Path.Path> =>
  Effect.gen(function*() {
    if (kwargs.unpack === "none") return undefined
    const path_ = yield* Path.Path
    return makeUnpacker({
      kwargs,
      cacheDir: path_.resolve(kwargs.cache_dir ?? (yield* cache.defaultCacheDir(path_))),
      verify: kwargs.verify ?? "changed"
    })
  })
