import * as NodeContext from "@effect/platform-node/NodeContext"
import { execFileSync, spawn } from "node:child_process"
import * as crypto from "node:crypto"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import * as Layer from "effect/Layer"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as MemoryBudget from "../src/MemoryBudget.js"
import type * as Storage from "../src/Storage.js"

/** A real temporary folder, removed when the scope closes. */
export const tempDir: Effect.Effect<string, never, import("effect/Scope").Scope> = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "mlup-storage-test-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** Writes files (name → content) into `dir`, creating sub-folders. */
export const writeFiles = (dir: string, files: Record<string, string | Uint8Array>): void => {
  for (const [name, content] of Object.entries(files)) {
    const file = path.join(dir, name)
    fs.mkdirSync(path.dirname(file), { recursive: true })
    fs.writeFileSync(file, content)
  }
}

/**
 * An archive made by the tools users make them with: GNU tar (`tar.gz`,
 * `tar`) or Info-ZIP (`zip`), of `files` (name → content) at its root.
 */
export const archiveOf = (
  format: "tar.gz" | "tar" | "zip",
  files: Record<string, string | Uint8Array>
): Effect.Effect<Uint8Array, never, import("effect/Scope").Scope> =>
  Effect.map(tempDir, (dir) => {
    const src = path.join(dir, "src")
    writeFiles(src, files)
    const archive = path.join(dir, `archive.${format}`)
    if (format === "zip") execFileSync("zip", ["-qry", archive, "."], { cwd: src })
    else execFileSync("tar", [format === "tar" ? "cf" : "czf", archive, "-C", src, ...Object.keys(files)])
    return new Uint8Array(fs.readFileSync(archive))
  })

/** Deterministic pseudo-random bytes. */
export const bytesOf = (size: number, seed = 1): Uint8Array => {
  const bytes = new Uint8Array(size)
  let x = seed >>> 0 || 1
  for (let i = 0; i < size; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    bytes[i] = x & 0xff
  }
  return bytes
}

/** How many file descriptors this process has open. */
export const openDescriptors = (): number => fs.readdirSync("/proc/self/fd").length

/** What the spied file system saw. */
export interface FileSystemLog {
  readonly opened: Array<string>
  /** Every buffer handed to `File.read`, in order, as it was at the time of the call. */
  readonly reads: Array<{ readonly view: Uint8Array; readonly byteOffset: number; readonly byteLength: number }>
  /** Whole-file reads (`readFile`, `stream`): the storage must never use them. */
  readonly wholeReads: Array<string>
}

/**
 * Node's real file system, with every open and read recorded, and an optional
 * hook that runs before each `File.read` (to slow a read down or to signal it).
 * Not a mock: every call goes to the real file system.
 */
export const spyFileSystem = (
  beforeRead: Effect.Effect<void> = Effect.void
): Effect.Effect<{ readonly log: FileSystemLog; readonly layer: Layer.Layer<FileSystem.FileSystem> }> =>
  Effect.gen(function*() {
    const real = yield* Effect.provide(FileSystem.FileSystem, NodeContext.layer)
    const log: FileSystemLog = { opened: [], reads: [], wholeReads: [] }
    const spied: FileSystem.FileSystem = {
      ...real,
      open: (file, options) =>
        real.open(file, options).pipe(
          Effect.tap(() => Effect.sync(() => log.opened.push(file))),
          Effect.map((handle) => {
            const wrapped: FileSystem.File = Object.create(handle)
            ;(wrapped as { read: FileSystem.File["read"] }).read = (buffer) =>
              beforeRead.pipe(
                Effect.zipRight(Effect.sync(() => log.reads.push({ view: buffer, byteOffset: buffer.byteOffset, byteLength: buffer.byteLength }))),
                Effect.zipRight(handle.read.call(wrapped, buffer))
              )
            return wrapped
          })
        ),
      readFile: (file) => {
        log.wholeReads.push(file)
        return real.readFile(file)
      },
      stream: (file, options) => {
        log.wholeReads.push(file)
        return real.stream(file, options)
      }
    }
    return { log, layer: Layer.succeed(FileSystem.FileSystem, spied) }
  })

/** What the storages need on Node, as the tests provide it: NodeContext plus an HTTP client. */
export const platform = Layer.mergeAll(NodeContext.layer, NodeHttpClient.layer)

/**
 * The digest and length of some bytes: compared instead of the bytes
 * themselves, because deep equality on megabytes of typed arrays is slow.
 */
export const fingerprint = (bytes: Uint8Array): string =>
  `${bytes.byteLength} bytes, sha256 ${crypto.createHash("sha256").update(bytes).digest("hex")}`

/**
 * Loads, inside a scope of its own, and describes each file by what a test
 * compares: its tag, name, size, where it is, and a fingerprint of its bytes.
 */
export const contents = (storage: Storage.Storage["Type"]) =>
  Effect.scoped(Effect.flatMap(storage.load, (files) =>
    Effect.forEach(files, (file) =>
      Effect.sync(() => {
        if (file._tag === "Model") throw new Error("unexpected Model")
        const bytes = file._tag === "Bytes" ? file.bytes : fs.readFileSync(file.path)
        return { tag: file._tag, name: file.name, size: file.size, path: file.path, bytes: fingerprint(bytes) }
      }))))

/**
 * Every entry under `dir`, recursively. A folder that vanishes while it is scanned (a staging folder
 * removed by a download or a placing that is still running) fails Node's recursive scan with ENOENT:
 * the scan is then taken again.
 */
export const entriesUnder = (dir: string): Array<fs.Dirent> => {
  for (let attempt = 1;; attempt++) {
    try {
      return fs.readdirSync(dir, { recursive: true, withFileTypes: true })
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT" || !fs.existsSync(dir) || attempt === 100) throw error
    }
  }
}

/** Every file under `dir` (folders left out), relative, sorted. */
export const filesUnder = (dir: string): Array<string> =>
  entriesUnder(dir)
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)))
    .sort()

/** Changes one byte of a file in place (same size), and puts its mtime back: a silent corruption. */
export const flipByte = (file: string, offset: number): void => {
  const info = fs.statSync(file)
  const fd = fs.openSync(file, "r+")
  const byte = Buffer.alloc(1)
  fs.readSync(fd, byte, 0, 1, offset)
  byte[0] = byte[0]! ^ 0xff
  fs.writeSync(fd, byte, 0, 1, offset)
  fs.closeSync(fd)
  fs.utimesSync(file, info.atime, info.mtime)
}

/**
 * A process that loads on a 1 MiB tmpfs mounted at `cacheDir`, in a mount
 * namespace of an unprivileged user namespace of its own (no root needed):
 * a real full disk. `load` sends it a selection (its `cache_dir` is set) and
 * answers with the outcome, the cache's files (name, size) and the free bytes.
 * The process ends with the scope.
 */
export const onSmallDisk = (cacheDir: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(
        "unshare",
        [
          "--user",
          "--map-root-user",
          "--mount",
          "sh",
          "-c",
          "mount -t tmpfs -o size=1m tmpfs \"$1\" && shift && exec \"$@\"",
          "sh",
          cacheDir,
          process.execPath,
          "--import",
          "tsx",
          "test/fixtures/repl-child.ts"
        ],
        { cwd: path.resolve(import.meta.dirname, ".."), stdio: ["pipe", "pipe", "inherit"] }
      )
      const answers: Array<(line: string) => void> = []
      let buffered = ""
      child.stdout.on("data", (chunk) => {
        buffered += chunk
        let at: number
        while ((at = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, at)
          buffered = buffered.slice(at + 1)
          answers.shift()?.(line)
        }
      })
      return {
        child,
        load: (selection: { readonly storage_type: string; readonly storage_kwargs: object }) =>
          Effect.promise(() =>
            new Promise<any>((resolve) => {
              answers.push((line) => resolve(JSON.parse(line)))
              child.stdin.write(
                JSON.stringify({ ...selection, storage_kwargs: { ...selection.storage_kwargs, cache_dir: cacheDir } }) + "\n"
              )
            })
          )
      }
    }),
    ({ child }) => Effect.sync(() => child.kill())
  )

/**
 * Runs a storage's load with a memory budget of its own, inside the caller's
 * scope (which stays open), until it fails, or, with `interruptWhen`, until
 * the condition holds and the load is interrupted. What the load took must
 * already be back: succeeds with the error (if any), the bytes the load held
 * at the interruption, and the bytes of the budget still taken after it.
 */
export const budgetAfterFailure = (
  storage: Storage.Storage["Type"],
  interruptWhen?: Effect.Effect<boolean>
) =>
  Effect.gen(function*() {
    const total = 64 * 1024 * 1024
    const budget = yield* MemoryBudget.make({ bytes: total })
    const run = storage.load.pipe(Effect.provideService(MemoryBudget.MemoryBudget, budget))
    if (interruptWhen === undefined) {
      const error = yield* Effect.flip(run)
      return { error, heldBefore: undefined, stillTaken: total - (yield* budget.available) }
    }
    const fiber = yield* Effect.fork(run)
    yield* Effect.repeat(interruptWhen, { until: (ready) => ready, schedule: Schedule.spaced("10 millis") })
    const heldBefore = total - (yield* budget.available)
    yield* Fiber.interrupt(fiber)
    return { error: undefined, heldBefore, stillTaken: total - (yield* budget.available) }
  })

/**
 * Runs test/fixtures/selection-child.ts: a load of `selection` in a process
 * of its own (the tests kill it with SIGKILL midway). `done` has its outcome,
 * or the signal that ended it.
 */
export const runSelectionChild = (selection: unknown, env: Record<string, string> = {}) => {
  const root = path.resolve(import.meta.dirname, "..")
  const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(HF_|AWS_|AZURE_|GCS_)/.test(name)))
  const child = spawn(process.execPath, ["--import", "tsx", "test/fixtures/selection-child.ts", JSON.stringify(selection)], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...clean, ...env }
  })
  let out = ""
  child.stdout.on("data", (chunk) => (out += chunk))
  const done = new Promise<unknown>((resolve, reject) =>
    child.on("exit", (code, signal) => {
      if (signal !== null) resolve({ signal })
      else if (code === 0) resolve(JSON.parse(out.trim().split("\n").at(-1)!))
      else reject(new Error(`exit ${code}: ${out}`))
    })
  )
  return { child, done }
}

/** The engine's resume records under a cache folder (`partials/*.json`, and the HTTP cache's), parsed. */
export const partsRecords = (cacheDir: string): Array<{ readonly parts: Record<string, string>; readonly progress?: Record<string, { readonly bytes: number }> }> =>
  filesUnder(cacheDir)
    .filter((file) => file.endsWith(".json") && !file.endsWith(".done.json"))
    .flatMap((file) => {
      try {
        const record = JSON.parse(fs.readFileSync(path.join(cacheDir, file), "utf8"))
        return typeof record.partSize === "number" && typeof record.parts === "object" && record.parts !== null && !Array.isArray(record.parts) ? [record] : []
      } catch {
        return []
      }
    })

/**
 * The checkpoints of the (first) partial download under a cache folder: for
 * each part under way, the bytes flushed and recorded (none before the
 * folder exists).
 */
export const checkpointed = (cacheDir: string): Record<string, number> =>
  Object.fromEntries(
    Object.entries((fs.existsSync(cacheDir) ? partsRecords(cacheDir)[0]?.progress : undefined) ?? {})
      .map(([part, { bytes }]) => [part, bytes])
  )

/** Polls the checkpoints (every 20 ms, while a download runs for real) until `until` holds; succeeds with them. */
export const untilCheckpointed = (cacheDir: string, until: (parts: Record<string, number>) => boolean) =>
  Effect.repeat(Effect.sync(() => checkpointed(cacheDir)), { until, schedule: Schedule.spaced("20 millis") })

/** For `untilCheckpointed`: `count` parts under way, each with at least `bytes` recorded. */
export const eachPartAtLeast = (count: number, bytes: number) => (parts: Record<string, number>): boolean =>
  Object.keys(parts).length === count && Object.values(parts).every((n) => n >= bytes)

/** Options in code that load straight into memory, in parts of 1 MiB from 1 MiB on, without retries. */
export const intoMemoryInParts = {
  needLoadFile: true,
  cache: false,
  multipartThresholdMb: 1,
  partSizeMb: 1,
  retries: 0
} as const
