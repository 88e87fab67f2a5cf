// The bundled size of applications (esbuild, minified, for Node): one that
// loads a model from disk only, and one that also reads S3. Measured on the
// library's sources as an application imports them ("mlup-storage" and
// "mlup-storage/node"); reports what each bundle carries.
import * as esbuild from "esbuild"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "..")

const apps = {
  "Disk only": `
    import * as Effect from "effect/Effect"
    import { Storage } from "${root}/src/index.ts"
    import * as NodeStorage from "${root}/src/NodeStorage.ts"
    const program = Effect.scoped(Effect.flatMap(Storage.Storage, (storage) => storage.load))
    Effect.runPromise(program.pipe(Effect.provide(NodeStorage.layerDisk({ pathToFiles: process.argv[2] })))).then(console.log)
  `,
  "Disk and S3 (the SDK part bundled too, for scale)": `
    import * as Effect from "effect/Effect"
    import { Storage } from "${root}/src/index.ts"
    import * as S3Storage from "${root}/src/S3Storage.ts"
    import * as s3 from "${root}/src/internal/s3.ts"
    import * as NodeStorage from "${root}/src/NodeStorage.ts"
    const program = Effect.scoped(Effect.flatMap(Storage.Storage, (storage) => storage.load))
    console.log(typeof s3.make)
    Effect.runPromise(program.pipe(Effect.provide(NodeStorage.layerS3({ bucket: process.argv[2] })))).then(console.log)
  `
}

export interface BundleSize {
  readonly app: string
  readonly bytes: number
  readonly packages: ReadonlyArray<readonly [string, number]>
}

export const measureBundles = async (): Promise<Array<BundleSize>> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlup-storage-bundle-"))
  try {
    const sizes: Array<BundleSize> = []
    for (const [app, source] of Object.entries(apps)) {
      const entry = path.join(dir, "app.ts")
      fs.writeFileSync(entry, source)
      const outfile = path.join(dir, "app.mjs")
      const result = await esbuild.build({
        entryPoints: [entry],
        outfile,
        bundle: true,
        minify: true,
        platform: "node",
        format: "esm",
        metafile: true,
        nodePaths: [path.join(root, "node_modules")],
        logLevel: "error"
      })
      const byPackage = new Map<string, number>()
      for (const [input, { bytesInOutput }] of Object.entries(Object.values(result.metafile.outputs)[0]!.inputs)) {
        const name = /node_modules\/((@[^/]+\/)?[^/]+)/.exec(input)?.[1] ?? "mlup-storage"
        byPackage.set(name, (byPackage.get(name) ?? 0) + bytesInOutput)
      }
      sizes.push({
        app,
        bytes: fs.statSync(outfile).size,
        packages: [...byPackage].filter(([, bytes]) => bytes > 0).sort((a, b) => b[1] - a[1])
      })
    }
    return sizes
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const kib = (bytes: number) => `${(bytes / 1024).toFixed(0)} KiB`

export const bundleReport = (sizes: ReadonlyArray<BundleSize>): string => {
  const rows = sizes.map(({ app, bytes, packages }) => {
    const has = (prefix: string) => packages.some(([name]) => name.startsWith(prefix))
    const top = packages.slice(0, 4).map(([name, bytes]) => `${name} ${kib(bytes)}`).join(", ")
    return `| ${app} | ${kib(bytes)} | ${has("@aws-sdk") || has("@smithy") ? "yes" : "no"} | ${has("@effect/cli") ? "yes" : "no"} | ${top} |`
  })
  return `## The bundled size of an application

An application bundled with esbuild (minified, for Node), importing \`mlup-storage\` and
\`mlup-storage/node\`. The AWS SDK is an optional peer, loaded by a path bundlers do not follow:
an application without S3 neither installs nor bundles it. An application that uses S3 loads the SDK
part (\`dist/internal/s3.js\`) and the SDK from \`node_modules\` at run time, so a bundled one keeps
\`mlup-storage\` external; the second row bundles that part too, to show what S3 weighs. The command
line (and \`@effect/cli\`) is never in an application's bundle.

| application | bundle | AWS SDK in it | @effect/cli in it | largest parts |
| --- | ---: | --- | --- | --- |
${rows.join("\n")}
`
}

if (import.meta.url === `file://${process.argv[1]}`) {
  measureBundles().then((sizes) => console.log(bundleReport(sizes)))
}
