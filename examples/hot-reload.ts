// An Effect HTTP server that answers predictions with the current version of an ONNX model, and
// follows the model's storage: a new version is opened beside the one serving, switched in once it
// opened, and the old session released once the requests using it are done. The storage comes from
// the environment (STORAGE_TYPE, STORAGE_KWARGS, as mlup's config), so the same server follows a
// folder, an HTTP URL, a bucket, the Hub or a registry.
//
//   STORAGE_TYPE=disk STORAGE_KWARGS='{"path_to_files": "/models", "file_mask": "\\.onnx$"}' PORT=8080 \
//     node --import tsx examples/hot-reload.ts
//   curl -s localhost:8080/predict -d '{"x": [0.1, 0.2, …]}'
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { createServer } from "node:http"
import * as ort from "onnxruntime-node"
import * as LoadedFile from "../src/LoadedFile.js"
import * as NodeStorage from "../src/NodeStorage.js"
import * as Storage from "../src/Storage.js"

// The deserialize step: an inference session per version, released with its version.
const deserialize = (files: ReadonlyArray<LoadedFile.LoadedFile>) =>
  Effect.acquireRelease(
    Effect.tryPromise(() => {
      const file = files.find((one) => one._tag !== "Model" && one.name.endsWith(".onnx"))
      if (file === undefined) return Promise.reject(new Error("no .onnx file in this version"))
      return LoadedFile.match(file, {
        Model: () => Promise.reject(new Error("not a file")),
        Path: ({ path }) => ort.InferenceSession.create(path),
        Bytes: ({ bytes }) => ort.InferenceSession.create(bytes)
      })
    }),
    (session) => Effect.promise(() => session.release())
  )

const Features = Schema.Struct({ x: Schema.Array(Schema.Number) })

const server = Layer.unwrapScoped(Effect.gen(function*() {
  const settle = yield* Config.duration("WATCH_SETTLE").pipe(Config.withDefault("2 seconds"))
  const interval = yield* Config.duration("WATCH_INTERVAL").pipe(Config.withDefault("30 seconds"))
  // Ready once the first version opened; a server does not start without its model.
  const model = yield* Storage.hotSwap(deserialize, { interval, settle })
  yield* Effect.log(`serving version ${yield* model.version}`)
  yield* model.changes.pipe(
    Stream.runForEach((change) =>
      change._tag === "Switched"
        ? Effect.log(`serving version ${change.version} (${change.digest.slice(0, 12)})`)
        : Effect.logWarning(`version ${change.version} rejected; the current one goes on serving`)
    ),
    Effect.forkScoped
  )
  const predict = Effect.gen(function*() {
    const { x } = yield* HttpServerRequest.schemaBodyJson(Features)
    // The session a request got stays open until its answer is made, even if a new one is switched in.
    const answer = yield* model.use((session, version) =>
      Effect.promise(async () => {
        const output = await session.run({ x: new ort.Tensor("float32", Float32Array.from(x), [1, x.length]) })
        return { version, probabilities: Array.from(output["probabilities"]!.data as Float32Array) }
      })
    )
    return yield* HttpServerResponse.json(answer)
  }).pipe(Effect.catchTag("ParseError", () => HttpServerResponse.text("expected {\"x\": [numbers]}", { status: 400 })))
  const router = HttpRouter.empty.pipe(
    HttpRouter.post("/predict", predict),
    HttpRouter.get("/version", Effect.flatMap(model.version, (version) => HttpServerResponse.json({ version })))
  )
  return HttpServer.serve(router)
}))

const listen = Config.all({
  port: Config.integer("PORT").pipe(Config.withDefault(8080)),
  host: Config.string("HOST").pipe(Config.withDefault("127.0.0.1"))
})

server.pipe(
  HttpServer.withLogAddress,
  Layer.provide(Layer.unwrapEffect(Effect.map(listen, (options) => NodeHttpServer.layer(createServer, options)))),
  Layer.provide(NodeStorage.layerConfig()),
  Layer.launch,
  NodeRuntime.runMain
)
