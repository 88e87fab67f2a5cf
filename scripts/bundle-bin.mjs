// Builds dist/bin.js, the `mlup-storage` command, as one file: the command
// line's own code and its dependencies (@effect/cli, its printers, yaml) are
// inlined, so that an application that uses only the library installs none of
// them; the library's modules stay where tsc put them (dist/) and are imported,
// as are the peers (effect, @effect/platform*, and the AWS SDK, optional).
import * as esbuild from "esbuild"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const src = path.join(root, "src")
const commandLineOwn = (file) =>
  /^(bin|Cli|CliError)\.ts$/.test(path.relative(src, file)) || path.relative(src, file).startsWith(`internal${path.sep}cli${path.sep}`)

const libraryExternal = {
  name: "library-external",
  setup(build) {
    build.onResolve({ filter: /^\.\.?\// }, (args) => {
      const file = path.resolve(args.resolveDir, args.path).replace(/\.js$/, ".ts")
      if (!file.startsWith(src) || commandLineOwn(file)) return undefined
      return { path: `./${path.relative(src, file).replace(/\.ts$/, ".js").split(path.sep).join("/")}`, external: true }
    })
  }
}

await esbuild.build({
  entryPoints: [path.join(src, "bin.ts")],
  outfile: path.join(root, "dist", "bin.js"),
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  external: ["effect", "@effect/platform", "@effect/platform-node", "@aws-sdk/*", "@effect-aws/*"],
  plugins: [libraryExternal],
  // Inlined CommonJS modules (yaml's) require Node's own modules.
  banner: { js: "import { createRequire as __mlupCreateRequire } from \"node:module\";\nconst require = __mlupCreateRequire(import.meta.url);" },
  logLevel: "warning"
})
