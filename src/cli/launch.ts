/**
 * What `dist/bin.js` is: it runs the command's bundle (`dist/bin/main.cjs`,
 * built from `src/bin.ts` by scripts/bundle-bin.mjs) through V8 with a code
 * cache, as Node 22's `module.enableCompileCache()` does (Node 20 has none).
 *
 * Without the cache, V8 parses and compiles the whole bundle on every start
 * (about a third of the start-up time). The cache holds V8's code for the
 * bundle as it was after a run, in the user's own cache folder
 * (`$XDG_CACHE_HOME/mlup-storage/compile-cache`, else
 * `~/.cache/mlup-storage/compile-cache`, whatever `MLUP_STORAGE_CACHE`, the
 * models' cache, says; never a shared temporary folder,
 * since code read from there would run as the user), keyed by Node's
 * version, the architecture and the bundle's size and time. V8 itself
 * refuses a cache made for another source or other flags; a refused,
 * missing or unreadable cache only costs the time it would have saved, and
 * is written again after the run. `NODE_DISABLE_COMPILE_CACHE=1` turns it
 * off (Node's own variable for its own cache).
 *
 * @internal
 */
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as vm from "node:vm"

const bundle = fileURLToPath(new URL("./bin/main.cjs", import.meta.url))

const cacheFolder = (): string | undefined => {
  if ((process.env["NODE_DISABLE_COMPILE_CACHE"] ?? "") !== "") return undefined
  const xdg = process.env["XDG_CACHE_HOME"] ?? ""
  return path.join(xdg !== "" ? xdg : path.join(os.homedir(), ".cache"), "mlup-storage", "compile-cache")
}

const source = fs.readFileSync(bundle, "utf8")
const folder = cacheFolder()
let cacheFile: string | undefined
let cachedData: Buffer | undefined
if (folder !== undefined) {
  try {
    const info = fs.statSync(bundle)
    cacheFile = path.join(
      folder,
      `main-${process.version}-${process.arch}-${info.size}-${Math.trunc(info.mtimeMs)}.v8`
    )
    cachedData = fs.readFileSync(cacheFile)
  } catch {
    cachedData = undefined
  }
}

// As Node wraps a CommonJS module (on one line, so that line numbers hold).
// The bundle's `import()` of a custom storage's module is this module's own (see `__import`).
const wrapped = `(function (exports, require, module, __filename, __dirname, __import) { ${source}\n});`
const script = new vm.Script(wrapped, {
  filename: bundle,
  ...(cachedData === undefined ? {} : { cachedData })
})

if (cacheFile !== undefined && (cachedData === undefined || script.cachedDataRejected === true)) {
  const target = cacheFile
  // Written once the run is over, so that it holds the code of every function the run compiled.
  process.once("exit", () => {
    try {
      fs.mkdirSync(path.dirname(target), { recursive: true, mode: 0o700 })
      // (Containers sharing a home folder may share pids: the name is random too.)
      const staging = `${target}.${process.pid}-${Math.random().toString(36).slice(2)}.tmp`
      fs.writeFileSync(staging, script.createCachedData(), { mode: 0o600 })
      fs.renameSync(staging, target)
      // The code of older bundles (another version, another Node) is of no use any more.
      for (const name of fs.readdirSync(path.dirname(target))) {
        if (name.endsWith(".v8") && name !== path.basename(target)) fs.rmSync(path.join(path.dirname(target), name), { force: true })
      }
    } catch {
      // A read-only or full cache folder: the next run compiles the bundle again.
    }
  })
}

const module = { exports: {} }
;(script.runInThisContext() as (
  exports: unknown,
  require: NodeRequire,
  module: unknown,
  filename: string,
  dirname: string,
  importModule: (specifier: string) => Promise<unknown>
) => void)(module.exports, createRequire(bundle), module, bundle, path.dirname(bundle), (specifier) => import(specifier))
