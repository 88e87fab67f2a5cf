/**
 * A zip archive unpacked into a folder of its own, under the rules of
 * `unpack.ts`. A zip's listing (its central directory) is at its end, so it
 * is read from a whole file, never while it streams in. Reading the format
 * is `yauzl`'s (it checks each entry's bytes against the size and CRC-32 the
 * listing declares, and refuses absolute and `..` names itself); writing is
 * ours (`tree.ts`). The sizes the listing declares are admitted against the
 * limits before any byte is written (the ratio against the archive's size:
 * a bomb of overlapping entries declares what it would unpack to). A refusal
 * or a failure removes the folder: nothing is left behind.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as fs from "node:fs"
import * as path from "node:path"
import { Readable, Transform } from "node:stream"
import * as zlib from "node:zlib"
import * as yauzl from "yauzl"
import * as tree from "./tree.js"
import { type Failure, unwritable } from "./tree.js"
import * as unpack from "./unpack.js"


// The file type bits of a Unix mode (zip stores it in the high half of the external attributes).
const S_IFMT = 0o170000
const types: Record<number, unpack.Entry["type"]> = { 0o100000: "file", 0o040000: "directory", 0o120000: "symlink" }
const kinds: Record<number, string> = {
  0o010000: "FIFO",
  0o020000: "character device",
  0o060000: "block device",
  0o140000: "socket"
}

const chunkSize = 1024 * 1024

/** Passes an entry's bytes on, failing when they are more or fewer than declared, or their CRC-32 differs. */
const checkedAgainst = (entry: yauzl.Entry) => {
  let bytes = 0
  let crc = 0
  return new Transform({
    highWaterMark: 4 * chunkSize,
    transform(chunk: Buffer, _encoding, callback) {
      bytes += chunk.byteLength
      if (bytes > entry.uncompressedSize) {
        return callback(new Error(`it holds more than the ${entry.uncompressedSize} bytes its listing declares`))
      }
      crc = zlib.crc32(chunk, crc)
      callback(null, chunk)
    },
    flush(callback) {
      if (bytes !== entry.uncompressedSize) {
        return callback(new Error(`it holds ${bytes} bytes, its listing declares ${entry.uncompressedSize}`))
      }
      if (crc !== entry.crc32) {
        return callback(new Error(`its CRC-32 is ${crc.toString(16)}, its listing declares ${entry.crc32.toString(16)}`))
      }
      callback()
    }
  })
}

/** The longest symbolic link target read from an entry (PATH_MAX). */
const maxLinkTarget = 4096

const entryOf = (entry: yauzl.Entry): unpack.Entry => {
  const name = entry.fileName
  // Made on Unix: the mode (type and permissions) is in the external attributes; else a name ending in "/" is a folder.
  const unix = entry.versionMadeBy >> 8 === 3 ? entry.externalFileAttributes >>> 16 : 0
  const format = unix & S_IFMT
  const type = name.endsWith("/") ? "directory" : format === 0 ? "file" : types[format] ?? "other"
  return {
    name,
    type,
    size: type === "file" ? entry.uncompressedSize : 0,
    mode: unix === 0 ? 0o644 : unix & 0o7777,
    ...(type === "other" ? { kind: kinds[format] ?? `file of type ${format.toString(8)}` } : {})
  }
}

// yauzl's own checks of names, as the rules of unpack.ts name them.
const refusalOf = (message: string): unpack.Refusal | undefined => {
  const [, name = ""] = /: (.*)$/.exec(message) ?? []
  if (message.startsWith("absolute path")) return { entry: name, rule: "absolute name", reason: "its name is absolute" }
  if (message.startsWith("invalid relative path")) return { entry: name, rule: "parent reference", reason: "its name holds `..`" }
  if (message.startsWith("invalid characters")) return { entry: name, rule: "bad name", reason: "its name holds a backslash" }
  return undefined
}

/**
 * Unpacks the zip `file` into `folder` (which must not exist; made here,
 * removed on any failure). Succeeds with the admitted entries, in the
 * archive's order.
 *
 * @internal
 */
export const unzip = (options: {
  readonly file: string
  readonly folder: string
  readonly limits: unpack.Limits
}): Effect.Effect<ReadonlyArray<unpack.Admitted>, Failure> =>
  Effect.async<ReadonlyArray<unpack.Admitted>, Failure>((resume) => {
    const { folder } = options
    const admitted: Array<unpack.Admitted> = []
    let failed = false
    let zip: yauzl.ZipFile | undefined
    let out: { readonly destroy: () => void } | undefined
    let reading: ReadonlyArray<{ readonly destroy: () => unknown }> = []
    let writing: Promise<void> = Promise.resolve()
    let written = 0

    const end = (then: () => void) => {
      for (const stage of reading) stage.destroy()
      out?.destroy()
      zip?.close()
      void writing.catch(() => {}).finally(then)
    }
    const fail = (failure: Failure) => {
      if (failed) return
      failed = true
      end(() => {
        fs.rmSync(folder, { recursive: true, force: true })
        resume(Effect.fail(failure))
      })
    }
    const broken = (reason: string) => fail({ _tag: "Broken", reason })

    try {
      fs.mkdirSync(folder, { mode: 0o755 })
    } catch (error) {
      return resume(Effect.fail(unwritable("the folder could not be made", error)))
    }

    yauzl.open(
      options.file,
      { lazyEntries: true, autoClose: false, decodeStrings: true, strictFileNames: true, validateEntrySizes: true },
      (error, opened) => {
        if (error !== null) return broken(`it is no zip archive, or a damaged one: ${error.message}`)
        zip = opened
        if (failed) return void opened.close()
        const guard = unpack.guard(options.limits, opened.fileSize)
        opened.on("error", (error: Error) => {
          const refusal = refusalOf(error.message)
          return refusal === undefined ? broken(error.message) : fail({ _tag: "Refused", refusal })
        })
        // An entry's bytes: read from the file in 1 MiB chunks, inflated by Node's zlib on its thread
        // pool (yauzl's own stream reads 16 KiB at a time and inflates in 16 KiB), then checked
        // against the size and the CRC-32 the listing declares (yauzl checks only the size).
        const read = (entry: yauzl.Entry, then: (stream: Readable) => void) =>
          opened.readLocalFileHeader(entry, { minimal: true }, (error, header) => {
            if (error !== null) return broken(`${entry.fileName} could not be read: ${error.message}`)
            if (failed) return
            const raw = entry.compressedSize === 0
              ? Readable.from([])
              : fs.createReadStream(options.file, {
                start: header.fileDataStart,
                end: header.fileDataStart + entry.compressedSize - 1,
                highWaterMark: chunkSize
              })
            const inflated = entry.compressionMethod === 8 ? raw.pipe(zlib.createInflateRaw({ chunkSize })) : raw
            const checked = inflated.pipe(checkedAgainst(entry))
            const stages = [...new Set([raw, inflated, checked])]
            reading = stages
            for (const stage of stages) {
              stage.on("error", (error: Error) => broken(`${entry.fileName} could not be read: ${error.message}`))
            }
            then(checked)
          })
        // An entry admitted by the rules, then made: a folder now, a file written (the next entry once
        // it is on disk), a link once the whole listing is checked.
        const make = (described: unpack.Entry, entry: yauzl.Entry) => {
          try {
            admitAndMake(described, entry)
          } catch (error) {
            fail(unwritable(`${entry.fileName} could not be made`, error))
          }
        }
        const admitAndMake = (described: unpack.Entry, entry: yauzl.Entry) => {
          const result = guard.admit(described)
          if (Either.isLeft(result)) return fail({ _tag: "Refused", refusal: result.left })
          const one = result.right
          admitted.push(one)
          const target = path.join(folder, one.path)
          if (described.type === "directory") fs.mkdirSync(target, { recursive: true, mode: one.mode })
          if (described.type !== "file") return opened.readEntry()
          read(entry, (stream) => {
            try {
              write(one, entry, stream, target)
            } catch (error) {
              fail(unwritable(`${entry.fileName} could not be made`, error))
            }
          })
        }
        const write = (one: unpack.Admitted, entry: yauzl.Entry, stream: Readable, target: string) => {
          const file = tree.writeFile(stream, target, one.mode, (bytes) => {
            written += bytes
            const within = guard.unpacked(written, 0)
            if (Either.isLeft(within)) fail({ _tag: "Refused", refusal: { ...within.left, entry: entry.fileName } })
            return Either.isRight(within)
          })
          out = file
          writing = file.closed
          file.closed.then(
            () => {
              if (!failed) opened.readEntry()
            },
            (error: Error) => fail(unwritable(`${entry.fileName} could not be written`, error))
          )
        }
        opened.on("entry", (entry: yauzl.Entry) => {
          if (failed) return
          const described = entryOf(entry)
          if (described.type === "directory" || described.type === "other") return make(described, entry)
          if (entry.isEncrypted()) return broken(`${entry.fileName} is encrypted, which is not supported`)
          if (!entry.canDecodeFileData()) {
            return broken(`${entry.fileName} is compressed with method ${entry.compressionMethod}; only stored and deflate are supported`)
          }
          if (described.type !== "symlink") return make(described, entry)
          // A symbolic link's target is its entry's bytes, read before it is admitted.
          read(entry, (stream) => {
            const chunks: Array<Buffer> = []
            let length = 0
            stream.on("data", (chunk: Buffer) => {
              length += chunk.byteLength
              if (length > maxLinkTarget) return broken(`${entry.fileName}: a link target longer than ${maxLinkTarget} bytes`)
              chunks.push(chunk)
            })
            stream.on("end", () => {
              if (!failed) make({ ...described, target: Buffer.concat(chunks).toString("utf8") }, entry)
            })
          })
        })
        opened.on("end", () => {
          if (failed) return
          const failure = tree.complete(guard, folder, admitted)
          if (failure !== undefined) return fail(failure)
          opened.close()
          resume(Effect.succeed(admitted))
        })
        opened.readEntry()
      }
    )
    // Interrupted: reading stops; what was written goes.
    return Effect.sync(() => {
      failed = true
      end(() => fs.rmSync(folder, { recursive: true, force: true }))
    })
  })
