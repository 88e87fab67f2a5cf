import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as DiskStorage from "../src/DiskStorage.js"
import * as GarbageCollector from "../src/GarbageCollector.js"
import * as mask_ from "../src/internal/mask.js"
import * as LoadedFile from "../src/LoadedFile.js"
import * as Storage from "../src/Storage.js"
import { storageContract } from "../src/Testing.js"
import { archiveOf, bytesOf, openDescriptors, platform, spyFileSystem, tempDir, writeFiles } from "./helpers.js"

const content = { a: bytesOf(1000, 1), b: bytesOf(70_000, 2) }

const diskLayer = (options: DiskStorage.Options) => DiskStorage.layer(options).pipe(Layer.provide(NodeContext.layer))

storageContract("DiskStorage (folder, paths)", Effect.gen(function*() {
  const dir = yield* tempDir
  writeFiles(dir, { "b.onnx": content.b, "a.onnx": content.a, "notes.txt": "not a model" })
  return {
    layer: diskLayer({ pathToFiles: dir, fileMask: String.raw`\.onnx$` }),
    expected: [
      { _tag: "Path", name: "a.onnx", content: content.a },
      { _tag: "Path", name: "b.onnx", content: content.b }
    ]
  }
}))

storageContract("DiskStorage (folder, bytes)", Effect.gen(function*() {
  const dir = yield* tempDir
  writeFiles(dir, { "b.onnx": content.b, "a.onnx": content.a, "empty.onnx": new Uint8Array(0) })
  return {
    layer: diskLayer({ pathToFiles: dir, fileMask: String.raw`\.onnx$`, needLoadFile: true }),
    expected: [
      { _tag: "Bytes", name: "a.onnx", content: content.a },
      { _tag: "Bytes", name: "b.onnx", content: content.b },
      { _tag: "Bytes", name: "empty.onnx", content: new Uint8Array(0) }
    ]
  }
}))

storageContract("DiskStorage (single file, bytes, from mlup kwargs)", Effect.gen(function*() {
  const dir = yield* tempDir
  writeFiles(dir, { "model.pckl": content.b })
  return {
    layer: Storage.layerFromSelection({
      storage_type: "mlup.ml.storage.local_disk.DiskStorage",
      storage_kwargs: { path_to_files: path.join(dir, "model.pckl"), need_load_file: true }
    }).pipe(Layer.provide(platform)),
    expected: [{ _tag: "Bytes", name: "model.pckl", content: content.b }]
  }
}))

// A SageMaker-style model.tar.gz (GNU tar), unpacked: the mask selects among its files.
storageContract("DiskStorage (a model.tar.gz, unpacked, paths)", Effect.gen(function*() {
  const dir = yield* tempDir
  const archive = yield* archiveOf("tar.gz", { "model.onnx": content.b, "weights.bin": content.a, "README.md": "not a model" })
  writeFiles(dir, { "model.tar.gz": archive })
  return {
    layer: diskLayer({
      pathToFiles: path.join(dir, "model.tar.gz"),
      fileMask: String.raw`\.(onnx|bin)$`,
      unpack: "auto",
      cacheDir: path.join(dir, "cache")
    }),
    expected: [
      { _tag: "Path", name: "model.onnx", content: content.b },
      { _tag: "Path", name: "weights.bin", content: content.a }
    ]
  }
}))

storageContract("DiskStorage (a folder of a zip and a plain file, unpacked, bytes)", Effect.gen(function*() {
  const dir = yield* tempDir
  const archive = yield* archiveOf("zip", { "model.onnx": content.b, "notes.txt": "no" })
  writeFiles(dir, { "model.zip": archive, "labels.onnx": content.a, "other.txt": "no" })
  return {
    layer: diskLayer({
      pathToFiles: dir,
      fileMask: String.raw`\.onnx$`,
      needLoadFile: true,
      unpack: "auto",
      cacheDir: path.join(dir, "..", `${path.basename(dir)}-cache`)
    }),
    expected: [
      { _tag: "Bytes", name: "labels.onnx", content: content.a },
      { _tag: "Bytes", name: "model.onnx", content: content.b }
    ]
  }
}))

/** Loads and returns a plain description of what was delivered. */
const loadWith = (options: DiskStorage.Options) =>
  Effect.scoped(Effect.gen(function*() {
    const storage = yield* DiskStorage.make(options)
    const files = yield* storage.load
    return files.map((file) =>
      LoadedFile.match(file, {
        Model: () => {
          throw new Error("the Disk storage never hands over a model")
        },
        Path: ({ name, path, size }) => ({ tag: "Path", name, path, size }),
        Bytes: ({ bytes, name, path, size }) => ({ tag: "Bytes", name, path, size, text: Buffer.from(bytes).toString() })
      })
    )
  })).pipe(Effect.provide(NodeContext.layer))

describe("DiskStorage", () => {
  it.scoped("a single file, by path only", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "model.pckl": "weights" })
      const files = yield* loadWith({ pathToFiles: path.join(dir, "model.pckl") })
      expect(files).toEqual([{ tag: "Path", name: "model.pckl", path: path.join(dir, "model.pckl"), size: 7 }])
    }))

  it.scoped("a relative path is resolved against the working directory", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "model.pckl": "weights" })
      const relative = path.relative(process.cwd(), path.join(dir, "model.pckl"))
      const files = yield* loadWith({ pathToFiles: relative })
      expect(files).toEqual([{ tag: "Path", name: "model.pckl", path: path.join(dir, "model.pckl"), size: 7 }])
    }))

  it.scoped("a folder with one match, with the default mask (mlup's (\\w.-_)*.pckl)", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "model.pckl": "weights", "model.onnx": "other", "README": "text" })
      expect(DiskStorage.defaultFileMask).toBe(String.raw`(\w.-_)*.pckl`)
      const files = yield* loadWith({ pathToFiles: dir, needLoadFile: true })
      expect(files).toEqual([
        { tag: "Bytes", name: "model.pckl", path: path.join(dir, "model.pckl"), size: 7, text: "weights" }
      ])
    }))

  it.scoped("a folder with several matches comes back sorted by name", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "c.bin": "3", "a.bin": "1", "B.bin": "2", "b.bin": "22", "x.txt": "no" })
      const files = yield* loadWith({ pathToFiles: dir, fileMask: String.raw`\.bin$` })
      expect(files.map((file) => file.name)).toEqual(["B.bin", "a.bin", "b.bin", "c.bin"])
    }))

  it.scoped("the mask is searched, not anchored, in each name (like re.search)", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "my-model.v2.onnx": "1", "tokenizer.json": "2" })
      const files = yield* loadWith({ pathToFiles: dir, fileMask: "model" })
      expect(files.map((file) => file.name)).toEqual(["my-model.v2.onnx"])
    }))

  it.scoped("for a single file the mask is searched in its path, as mlup does", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "models/v1/weights.bin": "w" })
      const file = path.join(dir, "models/v1/weights.bin")
      // The name alone does not match; the path does.
      const files = yield* loadWith({ pathToFiles: file, fileMask: String.raw`models/v\d+/` })
      expect(files.map((f) => f.name)).toEqual(["weights.bin"])
      const error = yield* Effect.flip(loadWith({ pathToFiles: file, fileMask: String.raw`\.onnx$` }))
      expect(error._tag).toBe("FileDoesNotMatchMask")
      if (error._tag !== "FileDoesNotMatchMask") return
      expect(error.path).toBe(file)
      expect(error.mask).toBe(String.raw`\.onnx$`)
      expect(error.message).toContain("does not match the mask")
    }))

  it.scoped("a RegExp mask in code works, even with the g flag", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "a.onnx": "1", "b.onnx": "2", "c.onnx": "3" })
      const files = yield* loadWith({ pathToFiles: dir, fileMask: /\.ONNX$/gi })
      expect(files.map((file) => file.name)).toEqual(["a.onnx", "b.onnx", "c.onnx"])
    }))

  it.scoped("Python re syntax in masks: named groups, \\Z, inline flags", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "Model-7.PCKL": "1", "model-7.pckl.bak": "2" })
      const files = yield* loadWith({ pathToFiles: dir, fileMask: String.raw`(?i)(?P<stem>model)-\d\.pckl\Z` })
      expect(files.map((file) => file.name)).toEqual(["Model-7.PCKL"])
    }))

  it.scoped("file names with regex metacharacters, matched by an escaped mask", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const names = ["model(1)+[v2].pckl", "model$^.pckl", "model{x}|y.pckl", "a b.pckl"]
      writeFiles(dir, Object.fromEntries(names.map((name) => [name, name])))
      const files = yield* loadWith({ pathToFiles: dir, fileMask: String.raw`^model\(1\)\+\[v2\]\.pckl$`, needLoadFile: true })
      expect(files).toEqual([
        { tag: "Bytes", name: names[0], path: path.join(dir, names[0]!), size: names[0]!.length, text: names[0] }
      ])
      const all = yield* loadWith({ pathToFiles: dir })
      expect(all.map((file) => file.name)).toEqual([...names].sort())
    }))

  it.scoped("symbolic links: to a file it is loaded, to a folder it is handed over by path, to nothing it is skipped", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const elsewhere = yield* tempDir
      writeFiles(elsewhere, { "real.pckl": "real", "sub/x": "" })
      writeFiles(dir, { "own.pckl": "own" })
      fs.symlinkSync(path.join(elsewhere, "real.pckl"), path.join(dir, "link.pckl"))
      fs.symlinkSync(path.join(elsewhere, "sub"), path.join(dir, "folder.pckl"))
      fs.symlinkSync(path.join(elsewhere, "missing.pckl"), path.join(dir, "dangling.pckl"))
      const files = yield* loadWith({ pathToFiles: dir, needLoadFile: true })
      expect(files).toEqual([
        { tag: "Path", name: "folder.pckl", path: path.join(dir, "folder.pckl"), size: 0 },
        { tag: "Bytes", name: "link.pckl", path: path.join(dir, "link.pckl"), size: 4, text: "real" },
        { tag: "Bytes", name: "own.pckl", path: path.join(dir, "own.pckl"), size: 3, text: "own" }
      ])
      // path_to_files itself a link to a file
      const single = yield* loadWith({ pathToFiles: path.join(dir, "link.pckl") })
      expect(single).toEqual([{ tag: "Path", name: "link.pckl", path: path.join(dir, "link.pckl"), size: 4 }])
    }))

  it.scoped("a link loop is a ReadFailed error with its code", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      fs.symlinkSync(path.join(dir, "loop.pckl"), path.join(dir, "loop.pckl"))
      const error = yield* Effect.flip(loadWith({ pathToFiles: path.join(dir, "loop.pckl") }))
      expect(error._tag).toBe("ReadFailed")
      if (error._tag !== "ReadFailed") return
      expect(error.code).toBe("ELOOP")
      expect(error.message).toContain("link loop")
    }))

  it.scoped("a sub-folder whose name matches the mask is handed over by its path, as mlup does (need_load_file too)", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "saved_model.pckl/variables/v.index": "x", "other.txt": "y", "real.pckl": "z" })
      for (const needLoadFile of [false, true]) {
        const files = yield* loadWith({ pathToFiles: dir, needLoadFile })
        expect(files.map((file) => [file.tag, file.name])).toEqual([
          [needLoadFile ? "Bytes" : "Path", "real.pckl"],
          ["Path", "saved_model.pckl"]
        ])
        expect(files[1]).toMatchObject({ path: path.join(dir, "saved_model.pckl"), size: 0 })
      }
    }))

  it.scoped("loadBytesSingleFile on a folder hands it over by its path, as mlup's load_bytes_single_file does", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "saved_model/saved_model.pb": "pb" })
      const file = yield* Effect.scoped(Effect.flatMap(
        DiskStorage.make({ pathToFiles: dir, needLoadFile: true }),
        (storage) => storage.loadBytesSingleFile(path.join(dir, "saved_model"))
      )).pipe(Effect.provide(NodeContext.layer))
      expect(file).toMatchObject({ _tag: "Path", name: "saved_model", path: path.join(dir, "saved_model"), size: 0 })
    }))

  it.effect("need_load_file as text: \"true\" / \"false\" (and yes/no, 1/0) are read as pydantic reads them, never \"false\" as true", () =>
    Effect.gen(function*() {
      for (const [text, value] of [["true", true], ["False", false], ["no", false], ["1", true], ["0", false]] as const) {
        const validated = yield* Storage.validate({ storage_type: "disk", storage_kwargs: { path_to_files: "/m", need_load_file: text } })
        expect(validated.kwargs).toMatchObject({ needLoadFile: value })
      }
      const error = yield* Effect.flip(Storage.validate({ storage_type: "disk", storage_kwargs: { path_to_files: "/m", need_load_file: "maybe" } }))
      expect(error._tag === "InvalidStorageOptions" && error.issues[0]).toMatchObject({ field: "need_load_file" })
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("an empty folder is NothingMatched, saying so", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const error = yield* Effect.flip(loadWith({ pathToFiles: dir }))
      expect(error._tag).toBe("NothingMatched")
      if (error._tag !== "NothingMatched") return
      expect(error).toMatchObject({ folder: dir, mask: String.raw`(\w.-_)*.pckl`, names: [], entries: 0 })
      expect(error.message).toContain("the folder is empty")
    }))

  it.scoped("NothingMatched says what was searched, with which mask, and a few names", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, Object.fromEntries(Array.from({ length: 25 }, (_, i) => [`file-${String(i).padStart(2, "0")}.onnx`, ""])))
      const error = yield* Effect.flip(loadWith({ pathToFiles: dir, fileMask: String.raw`\.pt$` }))
      expect(error._tag).toBe("NothingMatched")
      if (error._tag !== "NothingMatched") return
      expect(error.entries).toBe(25)
      expect(error.names).toEqual(Array.from({ length: 10 }, (_, i) => `file-${String(i).padStart(2, "0")}.onnx`))
      expect(error.message).toContain(dir)
      expect(error.message).toContain(String.raw`/\.pt$/`)
      expect(error.message).toContain(`"file-00.onnx"`)
      expect(error.message).toContain("and 15 more")
    }))

  it.scoped("a zero-byte file is delivered as zero bytes", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "empty.pckl": "" })
      const files = yield* loadWith({ pathToFiles: path.join(dir, "empty.pckl"), needLoadFile: true })
      expect(files).toEqual([{ tag: "Bytes", name: "empty.pckl", path: path.join(dir, "empty.pckl"), size: 0, text: "" }])
    }))

  it.scoped("a file or folder that does not exist is PathNotFound", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      for (const missing of [path.join(dir, "nope.pckl"), path.join(dir, "nope/"), path.join(dir, "nope", "deeper")]) {
        const error = yield* Effect.flip(loadWith({ pathToFiles: missing }))
        expect(error._tag).toBe("PathNotFound")
        if (error._tag === "PathNotFound") expect(error.path).toBe(path.resolve(missing))
      }
      // A path through a file (ENOTDIR) does not exist either.
      writeFiles(dir, { "file.pckl": "x" })
      const error = yield* Effect.flip(loadWith({ pathToFiles: path.join(dir, "file.pckl", "inner.pckl") }))
      expect(error._tag).toBe("PathNotFound")
    }))

  it.scoped("need_load_file false never reads file contents", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "a.pckl": bytesOf(5000), "b.pckl": bytesOf(10) })
      const spy = yield* spyFileSystem()
      const files = yield* Effect.scoped(Effect.flatMap(DiskStorage.make({ pathToFiles: dir }), (s) => s.load)).pipe(
        Effect.provide(spy.layer),
        Effect.provide(NodeContext.layer)
      )
      expect(files.map((file) => file._tag)).toEqual(["Path", "Path"])
      expect(spy.log.opened).toEqual([])
      expect(spy.log.reads).toEqual([])
      expect(spy.log.wholeReads).toEqual([])
    }))

  it.scoped("need_load_file true reads each file into one buffer of its size, in place", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const big = bytesOf(20 * 1024 * 1024 + 123, 7)
      writeFiles(dir, { "big.pckl": big, "small.pckl": "small" })
      const spy = yield* spyFileSystem()
      const result = yield* Effect.scoped(Effect.gen(function*() {
        const storage = yield* DiskStorage.make({ pathToFiles: dir, needLoadFile: true })
        const files = yield* storage.load
        return files.map((file) => (file._tag === "Bytes" ? { size: file.size, buffer: file.bytes.buffer, same: Buffer.from(file.bytes).equals(file.name === "big.pckl" ? big : Buffer.from("small")) } : undefined))
      })).pipe(Effect.provide(spy.layer), Effect.provide(NodeContext.layer))
      expect(spy.log.wholeReads).toEqual([])
      expect(spy.log.opened).toEqual([path.join(dir, "big.pckl"), path.join(dir, "small.pckl")])
      expect(result.map((r) => r?.same)).toEqual([true, true])
      // Every read of big.pckl went into a view of one ArrayBuffer of exactly the file's size.
      const first = spy.log.reads[0]!.view.buffer
      const bigReads = spy.log.reads.filter((read) => read.view.buffer === first)
      expect(bigReads.length).toBe(3)
      expect(bigReads.reduce((sum, read) => sum + read.byteLength, 0)).toBe(big.byteLength)
      expect(bigReads.map((read) => read.byteOffset)).toEqual([0, 8 * 1024 * 1024, 16 * 1024 * 1024])
      expect(result[0]!.buffer).toBe(first)
      // After the scope, that ArrayBuffer was detached.
      expect(first.byteLength).toBe(0)
    }))

  it.live("interruption during a read closes the file and releases the buffer", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "big.pckl": bytesOf(32 * 1024 * 1024, 3) })
      const firstRead = yield* Deferred.make<void>()
      const spy = yield* spyFileSystem(
        Effect.zipRight(Deferred.succeed(firstRead, undefined), Effect.sleep("30 millis"))
      )
      const descriptorsBefore = openDescriptors()
      const fiber = yield* Effect.scoped(Effect.gen(function*() {
        const storage = yield* DiskStorage.make({ pathToFiles: dir, needLoadFile: true })
        return yield* storage.load
      })).pipe(
        Effect.provide(spy.layer),
        Effect.provide(NodeContext.layer),
        Effect.fork
      )
      yield* Deferred.await(firstRead)
      const exit = yield* Fiber.interrupt(fiber)
      expect(Exit.isInterrupted(exit)).toBe(true)
      expect(spy.log.reads.length).toBeGreaterThan(0)
      expect(spy.log.reads.length).toBeLessThan(4)
      expect(spy.log.reads[0]!.view.buffer.byteLength).toBe(0)
      expect(openDescriptors()).toBe(descriptorsBefore)
    }).pipe(Effect.scoped))

  it.live("the collector runs once when an interrupted load's scope closes", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "big.pckl": bytesOf(24 * 1024 * 1024, 3) })
      const firstRead = yield* Deferred.make<void>()
      const spy = yield* spyFileSystem(Effect.zipRight(Deferred.succeed(firstRead, undefined), Effect.sleep("30 millis")))
      const context = yield* Layer.build(Layer.mergeAll(GarbageCollector.layerTest, NodeContext.layer, spy.layer))
      const fiber = yield* Effect.fork(Effect.scoped(Effect.flatMap(DiskStorage.make({ pathToFiles: dir, needLoadFile: true }), (s) => s.load)).pipe(Effect.provide(context)))
      yield* Deferred.await(firstRead)
      yield* Fiber.interrupt(fiber)
      const gc = yield* Effect.provide(GarbageCollector.TestGarbageCollector, context)
      expect(yield* gc.calls).toBe(1)
    }).pipe(Effect.scoped))
})

describe("DiskStorage: file_mask as Python's re reads it (checked against python3)", () => {
  // Names with Unicode letters and digits, marks, other numerals, odd spaces, punctuation and
  // regex metacharacters, and a newline (a legal file name, which tells `$` and `.` apart).
  const names = [
    "model.pckl", "Model.PCKL", "model.onnx", "weights-1.bin", "a_b.c-d.pckl", "модель.pckl", "模型.bin", "café.pckl",
    "cafe\u0301.pckl", "x²", "٣.bin", "Ⅻ.txt", "１２３", "a b.pckl", "a\u00a0b", "a\tb", "tab\u001cfs", "bom\ufeff",
    "(x).pckl", "[y]", "{z}", "a+b", "a*b", "a?b", "^x$", "a|b", "back\\slash", "dollar$", "line\n", "line\nnext",
    "aa", "aaa", "abab", "x{", "}", "#hash", "sp ace", "\b", "A", "a", "", "ǅ", "ß", "ſ", "K", "Ω", "ω",
    "😀.pckl", "e\u0301", "ΜΟΝΤΕΛΟ", "under_score", "-dash", ".hidden.pckl", "v1.2.3.tar.gz", "x-y_z.0"
  ]
  const curated = [
    String.raw`(\w.-_)*.pckl`, String.raw`\w+`, String.raw`^\w+\.pckl$`, String.raw`\d`, String.raw`\D+$`, String.raw`\s`, String.raw`\S+`,
    String.raw`\b\w`, String.raw`\Ba`, String.raw`\W`, String.raw`a\b`, "a{,2}", "a{2}", "a{,}", "x{", "{", "}", "a{x}", String.raw`[\w.-]+$`,
    String.raw`[^\d]`, ".", ".pckl", "(?i)MODEL", "(?i)ſ", "(?i)k", "(?i)ω", "(?s)line.", "line.", "(?m)^next", "^next", "$", "pckl$", "line$",
    String.raw`\Apckl`, String.raw`pckl\Z`, String.raw`line\Z`, "(?P<n>a)(?P=n)", String.raw`(a)\1`, "[]a]", "[^]a]+", String.raw`\.`,
    String.raw`\#`, String.raw`\ `, String.raw`\x41`, String.raw`\u0430`, String.raw`\U0001F600`, String.raw`\0`, String.raw`[\b]`,
    String.raw`(?a)\w+$`, String.raw`(?a)\d`, String.raw`(?a)\s`, "(?#comment)a", "a|b", "(?=a)a", "(?<=a)b", "(?<!a)b", "[a-z]+$",
    "[а-я]+", String.raw`[\u0400-\u04ff]`, String.raw`\d+`, "²", "[[y]", "[a-]", "[-a]", String.raw`[\]]`, String.raw`[\\]`, "a*?b",
    "a+?", "(a|b)+$", String.raw`\n`, String.raw`\t`, "[^a]", "[\\s]", "[\\w\\s]+", "[\\d.]+", "ǅ", "(?i)ǆ", "^$", "^", "(?u)\\w",
    // Refused (Python accepts them; this library says so): scoped flags, atomic, possessive, conditionals, \N{…}.
    "(?i:a)", "(?>a)", "a*+", "a++", "a?+", "a{1,2}+", "(a)(?(1)b|c)", String.raw`\N{DIGIT ONE}`, String.raw`[\W]`, String.raw`[^\D]`,
    // Invalid in Python too.
    "(", "[a", "a{2,1}", String.raw`\q`, "(?<n>a)", String.raw`\k<n>`, "*", "(?P<n>a)(?P=m)", String.raw`\2(a)`, "(?L)a", "a)",
    // Look-behind: Python takes one width only (JavaScript any).
    "(?<=ab)c", "(?<=a|b)c", "(?<=a{2})b", String.raw`(?<=[ab]\.)p`, String.raw`(?<!x\d)b`, "(?<=(?:ab|cd))e", String.raw`(?<=\bm)o`,
    "(?<=(a)(b))c", "(?<=[)]a)b", "(?<=m+)o", "(?<=a|bc)d", "(?<=a*)b", "(?<=a?)b", "(?<=a{1,2})b", "(?<!a|bb)c", "(?<=a{,2})b",
    String.raw`(?<=(a)\1)b`, "(?<=(?:a|bc))d", "(?<=a*?)b"
  ]
  // Random masks from atoms, quantifiers and groups.
  const atoms = [
    "a", "b", ".", String.raw`\w`, String.raw`\W`, String.raw`\d`, String.raw`\D`, String.raw`\s`, String.raw`\S`, String.raw`\b`,
    String.raw`\B`, "[a-z]", String.raw`[\w.]`, "[^a]", "$", "^", "x", "л", "²", String.raw`\.`, "-", "_", "{", "}", String.raw`\\`
  ]
  const quantifiers = ["", "", "", "*", "+", "?", "{,2}", "{1,}", "{2}", "*?"]
  let seed = 7
  const random = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed % n
  }
  const generated = Array.from({ length: 300 }, () => {
    let mask = ""
    for (let k = 0, n = 1 + random(4); k < n; k++) {
      const atom = atoms[random(atoms.length)]!
      const grouped = random(5) === 0 ? `(${atom}|${atoms[random(atoms.length)]})` : atom
      mask += grouped + (/^[\^$]|\\[bB]$/.test(atom) && grouped === atom ? "" : quantifiers[random(quantifiers.length)])
    }
    return (random(6) === 0 ? "(?i)" : "") + mask
  })
  // Random look-behinds: fixed or variable widths, which Python tells apart.
  const lookbehinds = Array.from({ length: 80 }, () => {
    let body = ""
    for (let k = 0, n = 1 + random(3); k < n; k++) {
      const atom = atoms[random(atoms.length)]!
      body += random(4) === 0 ? `(${atom}|${atoms[random(atoms.length)]})` : atom + (/^[\^$]|\\[bB]$/.test(atom) ? "" : quantifiers[random(quantifiers.length)])
    }
    return `(?<${random(2) === 0 ? "=" : "!"}${body})${atoms[random(atoms.length)]}`
  })
  const masks = [...new Set([...curated, ...generated, ...lookbehinds])]

  it("every mask selects what Python selects, or is refused by name; a mask Python refuses is refused too", () => {
    const python = JSON.parse(execFileSync("python3", ["-c", `
import json, re, sys
data = json.load(sys.stdin)
out = []
for mask in data["masks"]:
    try:
        pattern = re.compile(mask)
    except Exception as error:
        out.append({"error": str(error)})
        continue
    out.append({"selected": [name for name in data["names"] if pattern.search(name)]})
print(json.dumps(out))
`], { input: JSON.stringify({ masks, names }), encoding: "utf8", maxBuffer: 64 * 1024 * 1024 }))
    const refusedByName = /does not support|not supported/
    let compared = 0
    let refused = 0
    let invalid = 0
    masks.forEach((mask, k) => {
      const expected = python[k] as { error?: string; selected?: Array<string> }
      const ours = mask_.compile(mask)
      if (expected.error !== undefined) {
        expect({ mask, ours: Either.isLeft(ours) }).toEqual({ mask, ours: true })
        invalid++
        return
      }
      if (Either.isLeft(ours)) {
        expect({ mask, refusal: ours.left }).toEqual({ mask, refusal: expect.stringMatching(refusedByName) })
        refused++
        return
      }
      expect({ mask, selected: names.filter((name) => ours.right.test(name)) }).toEqual({ mask, selected: expected.selected })
      compared++
    })
    // Most masks are compared; only the constructs listed in the docs are refused.
    expect(compared).toBeGreaterThan((masks.length - invalid) * 0.8)
    expect(refused).toBeLessThanOrEqual(12)
  })

  it.effect("a refused construct or an over-long mask is InvalidStorageOptions naming file_mask, up front", () =>
    Effect.gen(function*() {
      for (const mask of ["(?i:model)", "a".repeat(40_000)]) {
        const error = yield* Effect.flip(Storage.validate({ storage_type: "disk", storage_kwargs: { path_to_files: "/m", file_mask: mask } }))
        expect(error._tag === "InvalidStorageOptions" && error.issues.map((issue) => issue.field)).toEqual(["file_mask"])
        expect(error.message.length).toBeLessThan(600)
      }
    }).pipe(Effect.provide(NodeContext.layer)))
})

describe("DiskStorage: hostile masks never hang a load", () => {
  it("masks that may backtrack catastrophically are told apart from the others", () => {
    for (const mask of ["(a+)+$", "(a|aa)*b", "(\\w+\\s?)*$", "((ab)*)+", "(a)\\1", "(?P<x>a)(?P=x)", "(x{2,})+"]) {
      expect({ mask, risky: mask_.mayBacktrack(mask) }).toEqual({ mask, risky: true })
    }
    for (const mask of [String.raw`(\w.-_)*.pckl`, String.raw`\.onnx$`, "(ab)+", "a+b*c?", "[(a+)+]", "(a|b)", String.raw`\(a+\)+`]) {
      expect({ mask, risky: mask_.mayBacktrack(mask) }).toEqual({ mask, risky: false })
    }
  })

  it.scoped("(a+)+$ against a long name: the event loop keeps running, and the load ends with a typed error after the timeout (the Clock's)", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { [`${"a".repeat(40)}!`]: "x", "model.pckl": "w" })
      let ticks = 0
      const timer = setInterval(() => ticks++, 50)
      yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(timer)))
      const fiber = yield* Effect.fork(Effect.flip(loadWith({ pathToFiles: dir, fileMask: "(a+)+$" })))
      // The worker backtracks for real (minutes for 40 letters); the process is not blocked meanwhile:
      // the timer runs. Nothing ends the load before its timeout, 10 seconds of the Clock's time.
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 1000)))
      expect(ticks).toBeGreaterThan(10)
      yield* TestClock.adjust("9 seconds")
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 200)))
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 second")
      const error = yield* Fiber.join(fiber)
      expect(error).toMatchObject({ _tag: "InvalidStorageOptions", issues: [{ field: "file_mask" }] })
      expect(error.message).toContain("took more than 10s")
      expect(error.message).toContain("backtracks")
    }))

  it.live("and an interruption ends it at once", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { [`${"a".repeat(40)}!`]: "x" })
      const fiber = yield* Effect.fork(loadWith({ pathToFiles: dir, fileMask: "(a+)+$" }))
      yield* Effect.sleep("300 millis")
      const started = Date.now()
      yield* Fiber.interrupt(fiber)
      expect(Date.now() - started).toBeLessThan(2000)
    }).pipe(Effect.scoped))
})

describe("DiskStorage: archives (unpack)", () => {
  const treesOf = (cacheDir: string) =>
    fs.readdirSync(path.join(cacheDir, "unpacked")).filter((name) => /^[0-9a-f]{64}$/.test(name)).sort()

  it.scoped("a warm load uses the tree as it is; a new archive gets a new tree, the previous one stays, older ones go", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const cacheDir = path.join(dir, "cache")
      const options = { pathToFiles: path.join(dir, "model.tgz"), fileMask: "", unpack: "auto", cacheDir } as const
      const versions = [content.a, content.b, bytesOf(5000, 9)]
      writeFiles(dir, { "model.tgz": yield* archiveOf("tar.gz", { "model/w.bin": versions[0]! }) })
      const [first] = yield* loadWith(options)
      expect(first).toMatchObject({ tag: "Path", name: "model/w.bin", size: versions[0]!.byteLength })
      const inode = fs.statSync(first!.path).ino
      const [again] = yield* loadWith(options)
      // Not unpacked again: the same file, untouched.
      expect(again!.path).toBe(first!.path)
      expect(fs.statSync(again!.path).ino).toBe(inode)
      expect(treesOf(cacheDir).length).toBe(1)
      for (const [i, version] of versions.slice(1).entries()) {
        writeFiles(dir, { "model.tgz": yield* archiveOf("tar.gz", { "model/w.bin": version }) })
        const [next] = yield* loadWith(options)
        expect(fs.readFileSync(next!.path).equals(version)).toBe(true)
        // The tree just replaced stays (a reader may still use its paths); the one before goes.
        expect(treesOf(cacheDir).length).toBe(2)
        if (i === 1) expect(fs.existsSync(first!.path)).toBe(false)
      }
      expect(fs.readdirSync(path.join(cacheDir, "unpacked")).filter((name) => name.startsWith("staging-"))).toEqual([])
    }))

  it.scoped("an unpacked file changed on disk is unpacked again, never delivered as it is", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const options = { pathToFiles: path.join(dir, "m.tar"), fileMask: "", unpack: "auto", cacheDir: path.join(dir, "c") } as const
      writeFiles(dir, { "m.tar": yield* archiveOf("tar", { "w.bin": content.b }) })
      const [first] = yield* loadWith(options)
      fs.writeFileSync(first!.path, "tampered")
      const [second] = yield* loadWith(options)
      expect(fs.readFileSync(second!.path).equals(content.b)).toBe(true)
    }))

  it.scoped("an explicit format reads a file whose name does not tell it; the mask selects inside, or says what it saw", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "model": yield* archiveOf("zip", { "a.onnx": content.a, "b.txt": "x" }) })
      const cacheDir = path.join(dir, "c")
      const files = yield* loadWith({ pathToFiles: path.join(dir, "model"), fileMask: "onnx", unpack: "zip", cacheDir })
      expect(files.map((file) => file.name)).toEqual(["a.onnx"])
      const error = yield* Effect.flip(loadWith({ pathToFiles: path.join(dir, "model"), fileMask: "pckl", unpack: "zip", cacheDir }))
      expect(error).toMatchObject({ _tag: "NothingMatched", mask: "pckl", names: ["a.onnx", "b.txt"], entries: 2 })
      expect(error.message).toContain("(unpacked)")
      // Read as tar, it is no tar: a typed error, nothing left.
      const unreadable = yield* Effect.flip(loadWith({ pathToFiles: path.join(dir, "model"), fileMask: "", unpack: "tar", cacheDir }))
      expect(unreadable).toMatchObject({ _tag: "ArchiveUnreadable", format: "tar" })
      expect(fs.readdirSync(path.join(cacheDir, "unpacked")).filter((name) => name.startsWith("staging-"))).toEqual([])
    }))

  it.scoped("a hostile archive is ArchiveRefused (the entry, the rule, the option to raise) and leaves nothing behind", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      execFileSync("python3", ["-c", String.raw`
import io, sys, tarfile
with tarfile.open(sys.argv[1] + "/evil.tar.gz", "w:gz") as tar:
    info = tarfile.TarInfo("../escape.txt"); info.size = 1; tar.addfile(info, io.BytesIO(b"x"))
with tarfile.open(sys.argv[1] + "/bomb.tar.gz", "w:gz") as tar:
    info = tarfile.TarInfo("zeros.bin"); info.size = 8 * 1024 * 1024; tar.addfile(info, io.BytesIO(bytes(info.size)))
`, dir])
      const cacheDir = path.join(dir, "c")
      const evil = yield* Effect.flip(loadWith({ pathToFiles: path.join(dir, "evil.tar.gz"), fileMask: "", unpack: "auto", cacheDir }))
      expect(evil).toMatchObject({ _tag: "ArchiveRefused", entry: "../escape.txt", rule: "parent reference" })
      expect(fs.existsSync(path.join(dir, "escape.txt"))).toBe(false)
      const bomb = yield* Effect.flip(loadWith({ pathToFiles: path.join(dir, "bomb.tar.gz"), fileMask: "", unpack: "auto", cacheDir }))
      expect(bomb).toMatchObject({ _tag: "ArchiveRefused", rule: "ratio", limit: "unpack_max_ratio" })
      expect(bomb.message).toContain("raise unpack_max_ratio")
      expect(fs.readdirSync(path.join(cacheDir, "unpacked")).filter((name) => name !== "index")).toEqual([])
      // Raised, it unpacks.
      const files = yield* loadWith({
        pathToFiles: path.join(dir, "bomb.tar.gz"),
        fileMask: "",
        unpack: "auto",
        unpackMaxRatio: 10_000,
        cacheDir
      })
      expect(files).toMatchObject([{ name: "zeros.bin", size: 8 * 1024 * 1024 }])
    }))

  it.effect("unpack options are validated: an unknown format or a limit below its bound is InvalidStorageOptions", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Storage.fromSelection({ storage_type: "disk", storage_kwargs: { path_to_files: "x", unpack: "rar", unpack_max_ratio: 0 } })
      )
      expect(error).toMatchObject({ _tag: "InvalidStorageOptions" })
      expect(error.message).toContain("unpack")
      expect(error.message).toContain("unpack_max_ratio")
    }).pipe(Effect.provide(platform)))
})
