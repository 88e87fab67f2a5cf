// Builds the `mlup-storage` command:
//
//   dist/bin.js          the launcher (src/cli/launch.ts): runs the
//                        bundle through V8 with a code cache
//   dist/bin/main.cjs    the command line, the library's code and every package
//                        they use (effect, @effect/platform*, @effect/cli, its
//                        printers), in one minified file
//   dist/bin/yaml.cjs    yaml, loaded only to read a YAML --config file
//
// Node then parses one file (from V8's cache after the first run) instead of
// loading some 800 modules, which was most of the start-up time. The library's
// own ESM build (dist/*.js, from tsc) is untouched: applications import that.
// The AWS and Azure SDKs stay outside (optional peers): the bundle's S3 and
// Azure parts require them from node_modules when such a storage is made.
//
//   node scripts/bundle-bin.mjs [outdir]     (default: dist)
import * as esbuild from "esbuild"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const src = path.join(root, "src")
const outdir = path.resolve(process.argv[2] ?? path.join(root, "dist"))

// The library loads its S3 and Azure parts by a path bundlers do not follow
// (so that an application's bundle holds no AWS or Azure SDK). In the
// command's bundle each part must come from the same bundle (one copy of
// effect): the dynamic import is made one esbuild follows (evaluated only
// when such a storage is made).
const sdkPartLoader = /import\(\s*\/\*[^*]*\*\/\s*\/\*[^*]*\*\/\s*new URL\(sdkPart, import\.meta\.url\)\.href\)/
const sdkPartsInBundle = {
  name: "sdk-parts-in-bundle",
  setup(build) {
    build.onLoad({ filter: /[\\/]src[\\/](S3Storage|AzureStorage)\.ts$/ }, async (args) => {
      const text = await fs.promises.readFile(args.path, "utf8")
      const part = /const sdkPart = "(\.\/internal\/[a-z0-9]+\.js)"/.exec(text)?.[1]
      if (part === undefined || !sdkPartLoader.test(text)) {
        throw new Error(`scripts/bundle-bin.mjs: the SDK part's loader in ${path.basename(args.path)} changed`)
      }
      return { contents: text.replace(sdkPartLoader, `import(${JSON.stringify(part)})`), loader: "ts" }
    })
  }
}
// A custom storage's module (storage_type "module#export") is imported by
// Node's own loader: the launcher, an ES module, hands the bundle its
// `import` as `__import` (V8 runs no `import()` of a script compiled with a
// code cache).
const customImport = /import\(url\)/
const customStorageImport = {
  name: "custom-storage-import",
  setup(build) {
    build.onLoad({ filter: /[\\/]src[\\/]Selection\.ts$/ }, async (args) => {
      const text = await fs.promises.readFile(args.path, "utf8")
      if (text.match(new RegExp(customImport.source, "g"))?.length !== 1) {
        throw new Error("scripts/bundle-bin.mjs: the custom storage's import in Selection.ts changed")
      }
      return { contents: text.replace(customImport, "__import(url)"), loader: "ts" }
    })
  }
}

// yaml goes into a file of its own, required (through the bundle's own
// require, relative to the bundle) when a YAML file is read.
const yamlApart = {
  name: "yaml-apart",
  setup(build) {
    build.onResolve({ filter: /^yaml$/ }, () => ({ path: "yaml", namespace: "yaml-apart" }))
    build.onLoad({ filter: /.*/, namespace: "yaml-apart" }, () => ({ contents: "module.exports = require(\"./yaml.cjs\")", loader: "js" }))
    build.onResolve({ filter: /^\.\/yaml\.cjs$/, namespace: "yaml-apart" }, () => ({ path: "./yaml.cjs", external: true }))
  }
}

const common = { bundle: true, minify: true, platform: "node", target: "node20", legalComments: "none", logLevel: "warning" }
fs.rmSync(path.join(outdir, "bin"), { recursive: true, force: true })
await esbuild.build({
  ...common,
  entryPoints: [path.join(src, "bin.ts")],
  outfile: path.join(outdir, "bin", "main.cjs"),
  format: "cjs",
  external: ["@aws-sdk/*", "@smithy/*", "@azure/*"],
  plugins: [sdkPartsInBundle, customStorageImport, yamlApart]
})
// The bundle is run as a function's body (the launcher wraps it): no hashbang.
const main = path.join(outdir, "bin", "main.cjs")
fs.writeFileSync(main, fs.readFileSync(main, "utf8").replace(/^#!.*\n/, ""))
fs.chmodSync(main, 0o644)
await esbuild.build({
  ...common,
  stdin: { contents: "module.exports = require(\"yaml\")", resolveDir: root },
  outfile: path.join(outdir, "bin", "yaml.cjs"),
  format: "cjs"
})
await esbuild.build({
  ...common,
  entryPoints: [path.join(src, "cli", "launch.ts")],
  outfile: path.join(outdir, "bin.js"),
  format: "esm",
  banner: { js: "#!/usr/bin/env node" }
})
fs.chmodSync(path.join(outdir, "bin.js"), 0o755)
