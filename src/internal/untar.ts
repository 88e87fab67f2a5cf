/**
 * A tar archive (plain or gzip-compressed: detected from its first bytes)
 * unpacked, as it streams in, into a folder of its own, under the rules of
 * `unpack.ts`: each entry is admitted before any byte of it is written, the
 * bytes written are checked against the archive's bytes read (the ratio),
 * links are made once the whole listing was checked. Reading the format is
 * `tar`'s (node-tar's `Parser`, which writes nothing itself); writing is
 * ours. A refusal or a failure removes the folder: nothing is left behind.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as fs from "node:fs"
import * as path from "node:path"
import { type Readable, Transform } from "node:stream"
import * as zlib from "node:zlib"
import { Parser, type ReadEntry } from "tar"
import * as tree from "./tree.js"
import * as unpack from "./unpack.js"

const { unwritable } = tree

// tar's own bookkeeping entries (long names, pax headers): never files of the tree.
const metadata = new Set([
  "GlobalExtendedHeader",
  "ExtendedHeader",
  "OldExtendedHeader",
  "NextFileHasLongPath",
  "NextFileHasLongLinkpath",
  "OldGnuLongPath"
])

const entryOf = (entry: ReadEntry): unpack.Entry => {
  const base = { name: entry.path, size: entry.size ?? 0, mode: entry.mode ?? 0o644 }
  switch (entry.type) {
    case "File":
    case "OldFile":
    case "ContiguousFile":
      return { ...base, type: "file" }
    case "Directory":
      return { ...base, type: "directory", size: 0 }
    case "SymbolicLink":
      return { ...base, type: "symlink", size: 0, target: entry.linkpath }
    case "Link":
      return { ...base, type: "hardlink", size: 0, target: entry.linkpath }
    default:
      return { ...base, type: "other", kind: entry.type }
  }
}

const gzipMagic = Buffer.from([0x1f, 0x8b])
const zstdMagic = Buffer.from([0x28, 0xb5, 0x2f, 0xfd])
type Compression = "gzip" | "zstd" | "none"

/** The decompressor for an archive's compression, on Node's thread pool; none for a plain tar. */
const decompressorOf = (compression: Compression): Transform | undefined => {
  if (compression === "gzip") return zlib.createGunzip({ chunkSize: 1024 * 1024 })
  if (compression !== "zstd") return undefined
  const zstd = (zlib as { readonly createZstdDecompress?: () => Transform }).createZstdDecompress
  return zstd?.()
}

/**
 * Passes the bytes on once the first four told the compression (told to
 * `onCompression` before any byte is passed on, so that the decompressor can
 * be put after it), or fails when this Node cannot read it.
 */
const sniff = (onCompression: (compression: Compression) => void) => {
  let head: Buffer | undefined = Buffer.alloc(0)
  const decide = (bytes: Buffer): Error | null => {
    const compression = bytes.subarray(0, 2).equals(gzipMagic)
      ? "gzip"
      : bytes.subarray(0, 4).equals(zstdMagic)
      ? "zstd"
      : "none"
    if (compression === "zstd" && decompressorOf("zstd") === undefined) {
      return new Error(`it is compressed with zstd, which this Node (${process.version}) cannot read: Node 22.15 or later can`)
    }
    onCompression(compression)
    return null
  }
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      if (head === undefined) return callback(null, chunk)
      head = Buffer.concat([head, chunk])
      if (head.byteLength < 4) return callback()
      const first = head
      head = undefined
      const problem = decide(first)
      return problem === null ? callback(null, first) : callback(problem)
    },
    flush(callback) {
      const rest = head
      head = undefined
      if (rest === undefined) return callback()
      const problem = decide(rest)
      return problem === null ? callback(null, rest) : callback(problem)
    }
  })
}

/**
 * Unpacks `body` into `folder` (which must not exist; made here, removed on
 * any failure). Succeeds with the admitted entries, in the archive's order.
 *
 * @internal
 */
export const untar = (options: {
  readonly body: Readable
  readonly folder: string
  readonly limits: unpack.Limits
  /** The archive's size, when known (the ratio is then checked as entries are announced). */
  readonly archiveSize: number | undefined
  /**
   * Only the entries whose name (as the archive spells it, leading "./" and
   * "/" dropped) this keeps are admitted and written; the others are read
   * past (an image layer's files outside the path asked for).
   */
  readonly keep?: ((name: string) => boolean) | undefined
}): Effect.Effect<ReadonlyArray<unpack.Admitted>, tree.Failure> =>
  Effect.async<ReadonlyArray<unpack.Admitted>, tree.Failure>((resume) => {
    const { body, folder } = options
    const guard = unpack.guard(options.limits, options.archiveSize)
    const admitted: Array<unpack.Admitted> = []
    let archiveRead = 0
    let written = 0
    let failed = false
    // The file being written, one at a time (tar's entries come in order).
    let writing: Promise<void> = Promise.resolve()
    let out: { readonly destroy: () => void } | undefined
    // The gate and the decompressor between the body and the parser.
    const stages: Array<{ readonly destroy: () => void }> = []
    // The ratio is ours to check (unpack_max_ratio, against the archive's size when known), not node-tar's 1000.
    const parser = new Parser({ strict: true, maxDecompressionRatio: Number.POSITIVE_INFINITY })

    const fail = (failure: tree.Failure) => {
      if (failed) return
      failed = true
      body.destroy()
      for (const stage of stages) stage.destroy()
      out?.destroy()
      parser.abort(new Error("refused"))
      void writing.catch(() => {}).finally(() => {
        fs.rmSync(folder, { recursive: true, force: true })
        resume(Effect.fail(failure))
      })
    }

    try {
      fs.mkdirSync(folder, { mode: 0o755 })
    } catch (error) {
      return resume(Effect.fail(unwritable("the folder could not be made", error)))
    }

    // A folder or a file that cannot be made (a full disk, permissions) fails the unpacking, never the process.
    parser.on("entry", (entry: ReadEntry) => {
      try {
        onEntry(entry)
      } catch (error) {
        entry.resume()
        fail(unwritable(`${entry.path} could not be made`, error))
      }
    })
    const onEntry = (entry: ReadEntry) => {
      if (failed || metadata.has(entry.type)) return void entry.resume()
      if (options.keep !== undefined && !options.keep(entry.path.replace(/^(?:\.?\/)+/, ""))) return void entry.resume()
      const result = guard.admit(entryOf(entry))
      if (Either.isLeft(result)) {
        entry.resume()
        return fail({ _tag: "Refused", refusal: result.left })
      }
      const { mode, path: inside } = result.right
      admitted.push(result.right)
      const target = path.join(folder, inside)
      const type = result.right.entry.type
      if (type !== "file") {
        // Folders now; links once the whole listing is known (their targets may come later).
        if (type === "directory") fs.mkdirSync(target, { recursive: true, mode })
        return void entry.resume()
      }
      const file = tree.writeFile(entry, target, mode, (bytes) => {
        written += bytes
        const within = guard.unpacked(written, archiveRead)
        if (Either.isLeft(within)) fail({ _tag: "Refused", refusal: { ...within.left, entry: result.right.entry.name } })
        return Either.isRight(within)
      })
      out = file
      const closed = file.closed
      writing = writing.then(() => closed)
    }
    parser.on("warn", (_code: string, message: string | Error) => fail({ _tag: "Broken", reason: String(message) }))
    parser.on("error", (error: Error) => fail({ _tag: "Broken", reason: error.message }))
    parser.on("end", () => {
      if (failed) return
      void writing.then(
        () => {
          if (failed) return
          const failure = tree.complete(guard, folder, admitted)
          if (failure !== undefined) return fail(failure)
          resume(Effect.succeed(admitted))
        },
        (error: Error) => fail(unwritable("a file could not be written", error))
      )
    })
    // Piped, with the parser's backpressure (a file written slower than the archive arrives); the
    // archive's bytes counted as they pass (the ratio).
    body.on("data", (chunk: Buffer) => void (archiveRead += chunk.byteLength))
    // Decompressed by Node's zlib on its thread pool, while the event loop parses and writes (node-tar
    // would inflate synchronously on the event loop; and, for zstd where Node's zlib has none, before
    // 22.15, it throws from inside the stream, which would end the process).
    const gate = sniff((compression) => {
      const decompressor = decompressorOf(compression)
      if (decompressor === undefined) return void gate.pipe(parser as unknown as NodeJS.WritableStream)
      decompressor.on("error", (error) => fail({ _tag: "Broken", reason: `it could not be decompressed (${compression}): ${error.message}` }))
      stages.push(decompressor)
      gate.pipe(decompressor).pipe(parser as unknown as NodeJS.WritableStream)
    })
    stages.push(gate)
    body.pipe(gate)
    body.on("error", (error) => fail({ _tag: "Broken", reason: `the archive was cut off: ${error.message}` }))
    gate.on("error", (error) => fail({ _tag: "Broken", reason: error.message }))
    // Interrupted: reading stops; what was written goes.
    return Effect.sync(() => {
      failed = true
      body.destroy()
      for (const stage of stages) stage.destroy()
      out?.destroy()
      parser.abort(new Error("interrupted"))
      void writing.catch(() => {}).finally(() => fs.rmSync(folder, { recursive: true, force: true }))
    })
  })
