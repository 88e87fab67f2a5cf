import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { execFileSync } from "node:child_process"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as zlib from "node:zlib"
import * as unpack from "../src/internal/unpack.js"
import * as untar from "../src/internal/untar.js"
import * as unzip from "../src/internal/unzip.js"

const file = (name: string, size = 10, mode = 0o644): unpack.Entry => ({ name, type: "file", size, mode })
const folder = (name: string): unpack.Entry => ({ name, type: "directory", size: 0, mode: 0o755 })
const symlink = (name: string, target: string): unpack.Entry => ({ name, type: "symlink", size: 0, mode: 0o777, target })
const hardlink = (name: string, target: string): unpack.Entry => ({ name, type: "hardlink", size: 0, mode: 0o644, target })
const roomy: unpack.Limits = { maxEntries: 1000, maxBytes: 1024 ** 3, maxRatio: 1000 }

/** Admits every entry and finishes; the first refusal (or the admitted paths). */
const run = (entries: ReadonlyArray<unpack.Entry>, limits = roomy, archiveSize: number | undefined = 1024 ** 2) => {
  const guard = unpack.guard(limits, archiveSize)
  const paths: Array<string> = []
  for (const entry of entries) {
    const admitted = guard.admit(entry)
    if (Either.isLeft(admitted)) return admitted
    paths.push(admitted.right.path)
  }
  return Either.map(guard.finish(), () => paths)
}
const refusal = (result: Either.Either<unknown, unpack.Refusal>) => Either.isLeft(result) ? result.left : undefined

/**
 * A model folder as packers find one, in `dir`/src/model: weights (random, `size` bytes, returned), a
 * tokenizer folder, a setuid script, a link to the weights.
 */
const modelFolder = (dir: string, size: number) => {
  const model = path.join(dir, "src", "model")
  fs.mkdirSync(path.join(model, "tokenizer"), { recursive: true })
  const weights = crypto.randomBytes(size)
  fs.writeFileSync(path.join(model, "weights.bin"), weights)
  fs.writeFileSync(path.join(model, "tokenizer", "vocab.json"), "{\"a\": 1}")
  fs.writeFileSync(path.join(model, "serve.sh"), "#!/bin/sh\n")
  fs.chmodSync(path.join(model, "serve.sh"), 0o4775)
  fs.symlinkSync("weights.bin", path.join(model, "latest.bin"))
  return weights
}

describe("archive entries (the unpacking rules, at least PEP 706's data filter)", () => {
  it("names are relative paths inside the tree; absolute names, drives, `..`, NUL and backslashes are refused", () => {
    expect(Either.getOrThrow(unpack.pathOf("model/weights.bin"))).toBe("model/weights.bin")
    expect(Either.getOrThrow(unpack.pathOf("./model//config.json"))).toBe("model/config.json")
    for (
      const [name, rule] of [
        ["/etc/passwd", "absolute name"],
        ["C:/Windows/x", "absolute name"],
        ["../outside", "parent reference"],
        ["model/../../outside", "parent reference"],
        ["model/../inside", "parent reference"],
        ["model\\..\\x", "bad name"],
        ["a\0b", "bad name"],
        [".", "bad name"]
      ] as const
    ) {
      expect(refusal(unpack.pathOf(name))).toMatchObject({ entry: name, rule })
    }
  })

  it("only files, folders and links: a device or a FIFO is refused", () => {
    expect(refusal(run([file("a"), { name: "dev/null", type: "other", kind: "character device", size: 0, mode: 0o666 }])))
      .toMatchObject({ entry: "dev/null", rule: "special file", reason: expect.stringContaining("character device") })
    expect(refusal(run([{ name: "pipe", type: "other", kind: "FIFO", size: 0, mode: 0o644 }]))).toMatchObject({ rule: "special file" })
  })

  it("links resolve inside the tree through every link, in any order; absolute, escaping and looping ones are refused", () => {
    // Hugging Face's snapshot layout: a link up and across, to a file listed after it.
    expect(run([symlink("snapshots/r1/model.bin", "../../blobs/abc"), file("blobs/abc")])).toEqual(
      Either.right(["snapshots/r1/model.bin", "blobs/abc"])
    )
    expect(refusal(run([symlink("l", "/etc/passwd")]))).toMatchObject({ entry: "l", rule: "absolute link" })
    expect(refusal(run([symlink("a/l", "../../x")]))).toMatchObject({ entry: "a/l", rule: "link outside the tree" })
    // Read as text, d/x stays inside (d/u/../.. is the root); followed, d/u is the root and x leaves it.
    expect(run([symlink("d/u", "..")])).toEqual(Either.right(["d/u"]))
    expect(refusal(run([symlink("d/u", ".."), symlink("d/x", "u/../..")])))
      .toMatchObject({ entry: "d/x", rule: "link outside the tree" })
    expect(refusal(run([symlink("a", "b"), symlink("b", "a")]))).toMatchObject({ rule: "link outside the tree" })
  })

  it("nothing is written through a link of the archive, nor under a name it made a file", () => {
    expect(refusal(run([symlink("d", "inside"), file("d/passwd")]))).toMatchObject({ entry: "d/passwd", rule: "through a link" })
    expect(refusal(run([file("a"), file("a/b")]))).toMatchObject({ entry: "a/b", rule: "duplicate" })
    expect(refusal(run([file("a/b"), symlink("a", "elsewhere")]))).toMatchObject({ entry: "a", rule: "duplicate" })
    expect(refusal(run([file("x"), file("x")]))).toMatchObject({ entry: "x", rule: "duplicate" })
    expect(run([folder("m"), folder("m/"), file("m/w.bin")])).toEqual(Either.right(["m", "m", "m/w.bin"]))
  })

  it("hard links name a file of the archive inside the tree", () => {
    expect(run([file("a/w.bin"), hardlink("b/w.bin", "a/w.bin")])).toEqual(Either.right(["a/w.bin", "b/w.bin"]))
    expect(refusal(run([hardlink("h", "missing")]))).toMatchObject({ entry: "h", rule: "link to nothing" })
    expect(refusal(run([folder("d"), hardlink("h", "d")]))).toMatchObject({ rule: "link to nothing" })
    expect(refusal(run([hardlink("h", "../x")]))).toMatchObject({ rule: "link outside the tree" })
    expect(refusal(run([hardlink("h", "/etc/shadow")]))).toMatchObject({ rule: "absolute link" })
  })

  it("permissions are masked: no setuid, setgid, sticky or group/other write; owner rw; exec for others only with the owner's", () => {
    expect(unpack.modeOf(file("a", 1, 0o4755))).toBe(0o755)
    expect(unpack.modeOf(file("a", 1, 0o2777))).toBe(0o755)
    expect(unpack.modeOf(file("a", 1, 0o677))).toBe(0o644)
    expect(unpack.modeOf(file("a", 1, 0o000))).toBe(0o600)
    expect(unpack.modeOf(file("a", 1, 0o640))).toBe(0o640)
    expect(unpack.modeOf({ ...folder("d"), mode: 0o1777 })).toBe(0o755)
  })

  it("limits on entries, bytes and ratio refuse a bomb, each naming the option that raises it", () => {
    const few = { ...roomy, maxEntries: 3 }
    expect(refusal(run([file("a"), file("b"), file("c"), file("d")], few)))
      .toMatchObject({ entry: "d", rule: "entries", limit: "unpack_max_entries" })
    const small = { ...roomy, maxBytes: 100 }
    expect(refusal(run([file("a", 60), file("b", 60)], small))).toMatchObject({ entry: "b", rule: "bytes", limit: "unpack_max_bytes" })
    // 10 KiB declared from a 100-byte archive, at most 50 times its size.
    expect(refusal(run([file("zeros", 10 * 1024)], { ...roomy, maxRatio: 50 }, 100)))
      .toMatchObject({ entry: "zeros", rule: "ratio", limit: "unpack_max_ratio" })
    // An archive of unknown size: the bytes written against those read, as they go.
    const guard = unpack.guard({ ...roomy, maxRatio: 50 }, undefined)
    expect(Either.isRight(guard.admit(file("zeros", 10 * 1024)))).toBe(true)
    expect(Either.isRight(guard.unpacked(4000, 100))).toBe(true)
    expect(refusal(guard.unpacked(6000, 100))).toMatchObject({ rule: "ratio", limit: "unpack_max_ratio" })
    expect(refusal(unpack.guard(small, undefined).unpacked(101, 100))).toMatchObject({ rule: "bytes" })
  })
})

describe("tar archives unpacked as they stream in (GNU tar's, Python's, hostile ones)", () => {
  const work = () => fs.mkdtempSync(path.join(os.tmpdir(), "mlup-untar-"))
  const unpackFile = (archive: string, folder: string, limits = roomy) =>
    untar.untar({ body: fs.createReadStream(archive), folder, limits, archiveSize: fs.statSync(archive).size })

  it.effect("a SageMaker-style model.tar.gz made by GNU tar: files, folders, a link and permissions, as packed", () =>
    Effect.gen(function*() {
      const dir = work()
      const weights = modelFolder(dir, 3 * 1024 * 1024 + 17)
      for (const [name, flags] of [["model.tar.gz", "czf"], ["model.tar", "cf"]] as const) {
        const archive = path.join(dir, name)
        execFileSync("tar", [flags, archive, "-C", path.join(dir, "src"), "model"])
        const out = path.join(dir, `out-${name}`)
        const admitted = yield* unpackFile(archive, out)
        expect(admitted.map((entry) => entry.path).sort()).toEqual(
          ["model", "model/latest.bin", "model/serve.sh", "model/tokenizer", "model/tokenizer/vocab.json", "model/weights.bin"]
        )
        expect(fs.readFileSync(path.join(out, "model", "weights.bin")).equals(weights)).toBe(true)
        expect(fs.readlinkSync(path.join(out, "model", "latest.bin"))).toBe("weights.bin")
        expect(fs.readFileSync(path.join(out, "model", "latest.bin")).equals(weights)).toBe(true)
        // setuid and group write dropped, the owner's execute kept.
        expect(fs.statSync(path.join(out, "model", "serve.sh")).mode & 0o7777).toBe(0o755)
      }
      fs.rmSync(dir, { recursive: true, force: true })
    }))

  it.effect("300 files of mixed sizes (GNU tar): each complete, whichever of them is flushed and closed first", () =>
    Effect.gen(function*() {
      const dir = work()
      fs.mkdirSync(path.join(dir, "src", "shards"), { recursive: true })
      const shards = Array.from({ length: 300 }, (_, i) => crypto.randomBytes((i % 7) * 40_000 + 10))
      shards.forEach((bytes, i) => fs.writeFileSync(path.join(dir, "src", "shards", `s${i}.bin`), bytes))
      const archive = path.join(dir, "shards.tar")
      execFileSync("tar", ["cf", archive, "-C", path.join(dir, "src"), "shards"])
      const out = path.join(dir, "out")
      expect((yield* unpackFile(archive, out)).length).toBe(301)
      shards.forEach((bytes, i) => expect(fs.readFileSync(path.join(out, "shards", `s${i}.bin`)).equals(bytes)).toBe(true))
      fs.rmSync(dir, { recursive: true, force: true })
    }), 20_000)

  it.effect("a tar.zst (GNU tar --zstd): unpacked where Node reads zstd, else a failure that says so (never a crash)", () =>
    Effect.gen(function*() {
      const dir = work()
      fs.mkdirSync(path.join(dir, "src"))
      fs.writeFileSync(path.join(dir, "src", "w.bin"), "weights")
      execFileSync("tar", ["--zstd", "-cf", path.join(dir, "m.tar.zst"), "-C", path.join(dir, "src"), "w.bin"])
      const out = path.join(dir, "out")
      const result = yield* Effect.either(unpackFile(path.join(dir, "m.tar.zst"), out))
      if ("createZstdDecompress" in zlib) {
        expect(Either.isRight(result)).toBe(true)
        expect(fs.readFileSync(path.join(out, "w.bin"), "utf8")).toBe("weights")
      } else {
        expect(result).toEqual(Either.left({ _tag: "Broken", reason: expect.stringContaining("zstd") }))
        expect(fs.existsSync(out)).toBe(false)
      }
      fs.rmSync(dir, { recursive: true, force: true })
    }))

  it.effect("hostile archives (made with Python's tarfile) are refused by rule and leave nothing behind", () =>
    Effect.gen(function*() {
      const dir = work()
      execFileSync("python3", ["-c", hostile, dir])
      for (
        const [name, rule] of [
          ["absolute.tar", "absolute name"],
          ["parent.tar", "parent reference"],
          ["link-absolute.tar", "absolute link"],
          ["link-outside.tar", "link outside the tree"],
          ["through-link.tar", "through a link"],
          ["fifo.tar", "special file"],
          ["device.tar", "special file"],
          ["bomb.tar.gz", "ratio"]
        ] as const
      ) {
        const out = path.join(dir, `out-${name}`)
        const failure = yield* Effect.flip(unpackFile(path.join(dir, name), out, { ...roomy, maxRatio: 100 }))
        expect(failure, name).toMatchObject({ _tag: "Refused", refusal: { rule } })
        expect(fs.existsSync(out), name).toBe(false)
      }
      expect(fs.readdirSync(dir).filter((entry) => entry.startsWith("out-"))).toEqual([])
      fs.rmSync(dir, { recursive: true, force: true })
    }))
})

describe("zip archives (Info-ZIP's, Python's, hostile ones)", () => {
  const work = () => fs.mkdtempSync(path.join(os.tmpdir(), "mlup-unzip-"))

  it.effect("a model zipped by Info-ZIP: files, folders, a link and permissions, as packed", () =>
    Effect.gen(function*() {
      const dir = work()
      const weights = modelFolder(dir, 2 * 1024 * 1024 + 5)
      const archive = path.join(dir, "model.zip")
      // -y: links stored as links.
      execFileSync("zip", ["-qry", archive, "model"], { cwd: path.join(dir, "src") })
      const out = path.join(dir, "out")
      const admitted = yield* unzip.unzip({ file: archive, folder: out, limits: roomy })
      expect(admitted.map((entry) => entry.path).sort()).toEqual(
        ["model", "model/latest.bin", "model/serve.sh", "model/tokenizer", "model/tokenizer/vocab.json", "model/weights.bin"]
      )
      expect(fs.readFileSync(path.join(out, "model", "weights.bin")).equals(weights)).toBe(true)
      expect(fs.readFileSync(path.join(out, "model", "tokenizer", "vocab.json"), "utf8")).toBe("{\"a\": 1}")
      expect(fs.readlinkSync(path.join(out, "model", "latest.bin"))).toBe("weights.bin")
      expect(fs.statSync(path.join(out, "model", "serve.sh")).mode & 0o7777).toBe(0o755)
      fs.rmSync(dir, { recursive: true, force: true })
    }))

  it.effect("hostile zips (made with Python's zipfile) are refused by rule, damaged ones fail, and nothing is left", () =>
    Effect.gen(function*() {
      const dir = work()
      execFileSync("python3", ["-c", hostileZips, dir])
      for (
        const [name, tag, rule] of [
          ["absolute.zip", "Refused", "absolute name"],
          ["parent.zip", "Refused", "parent reference"],
          ["link-absolute.zip", "Refused", "absolute link"],
          ["link-outside.zip", "Refused", "link outside the tree"],
          ["through-link.zip", "Refused", "through a link"],
          ["fifo.zip", "Refused", "special file"],
          ["bomb.zip", "Refused", "ratio"],
          ["duplicate.zip", "Refused", "duplicate"],
          ["lying-size.zip", "Broken", undefined],
          ["not-a-zip.zip", "Broken", undefined]
        ] as const
      ) {
        const out = path.join(dir, `out-${name}`)
        const failure = yield* Effect.flip(unzip.unzip({ file: path.join(dir, name), folder: out, limits: { ...roomy, maxRatio: 100 } }))
        expect(failure, name).toMatchObject(rule === undefined ? { _tag: tag } : { _tag: tag, refusal: { rule } })
        expect(fs.existsSync(out), name).toBe(false)
      }
      // The bomb's limit can be raised (its option names it).
      const out = path.join(dir, "out-raised")
      yield* unzip.unzip({ file: path.join(dir, "bomb.zip"), folder: out, limits: { ...roomy, maxRatio: 10_000 } })
      expect(fs.statSync(path.join(out, "zeros.bin")).size).toBe(32 * 1024 * 1024)
      fs.rmSync(dir, { recursive: true, force: true })
    }))
})

const hostileZips = String.raw`
import sys, os, zipfile, warnings
warnings.simplefilter("ignore")
out = sys.argv[1]
def make(name, entries, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(os.path.join(out, name), "w", compression) as z:
        z.writestr("ok.txt", b"fine")
        for info, data in entries:
            z.writestr(info, data)
def file(name, data=b"x"):
    info = zipfile.ZipInfo(name); info.create_system = 3; info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED; return (info, data)
def link(name, target):
    info = zipfile.ZipInfo(name); info.create_system = 3; info.external_attr = 0o120777 << 16; return (info, target.encode())
make("absolute.zip", [file("/tmp/mlup-evil")])
make("parent.zip", [file("../mlup-evil")])
make("link-absolute.zip", [link("etc", "/etc")])
make("link-outside.zip", [link("up", "../..")])
make("through-link.zip", [link("d", "ok.txt"), file("d/evil")])
fifo = zipfile.ZipInfo("pipe"); fifo.create_system = 3; fifo.external_attr = 0o010644 << 16
make("fifo.zip", [(fifo, b"")])
make("bomb.zip", [file("zeros.bin", bytes(32 * 1024 * 1024))])
make("duplicate.zip", [file("ok.txt", b"other")])
stored = zipfile.ZipInfo("big.bin"); stored.create_system = 3; stored.external_attr = 0o100644 << 16
make("lying-size.zip", [(stored, bytes(100000))])
data = bytearray(open(os.path.join(out, "lying-size.zip"), "rb").read())
# The central directory's uncompressed size of big.bin (stored: the local header's too) says 1000, not 100000.
at = data.rfind(b"PK")
data[at + 24:at + 28] = (1000).to_bytes(4, "little")
open(os.path.join(out, "lying-size.zip"), "wb").write(bytes(data))
open(os.path.join(out, "not-a-zip.zip"), "wb").write(b"this is no zip archive" * 100)
`

// Each archive holds one thing that must be refused (after an ordinary file, so that writing had begun).
const hostile = String.raw`
import io, sys, tarfile, os
out = sys.argv[1]
def make(name, entries, mode="w"):
    with tarfile.open(os.path.join(out, name), mode) as tar:
        ok = tarfile.TarInfo("ok.txt"); data = b"fine"; ok.size = len(data); tar.addfile(ok, io.BytesIO(data))
        for info, data in entries:
            tar.addfile(info, None if data is None else io.BytesIO(data))
def file(name, data=b"x"):
    info = tarfile.TarInfo(name); info.size = len(data); return (info, data)
def link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name); info.type = kind; info.linkname = target; return (info, None)
def special(name, kind):
    info = tarfile.TarInfo(name); info.type = kind; info.devmajor = 1; info.devminor = 3; return (info, None)
make("absolute.tar", [file("/tmp/mlup-evil")])
make("parent.tar", [file("../mlup-evil")])
make("link-absolute.tar", [link("etc", "/etc"), file("etc/mlup-evil")])
make("link-outside.tar", [link("up", "../..")])
make("through-link.tar", [link("d", "ok.txt"), file("d/evil")])
make("fifo.tar", [special("pipe", tarfile.FIFOTYPE)])
make("device.tar", [special("null", tarfile.CHRTYPE)])
make("bomb.tar.gz", [file("zeros.bin", bytes(32 * 1024 * 1024))], "w:gz")
`
