#!/usr/bin/env node
/**
 * The `mlup-storage` binary: `Cli.run` on Node, with the exit code it
 * returns (130 when interrupted by SIGINT, 143 by SIGTERM).
 *
 * @since 0.3.0
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Cli from "./Cli.js"
import * as NodeStorage from "./NodeStorage.js"

// Logs go to stderr (stdout holds the result); the progress view replaces the
// library's own progress lines, so only warnings and errors are logged.
const logging = Logger.replace(Logger.defaultLogger, Logger.prettyLogger({ stderr: true })).pipe(
  Layer.merge(Logger.minimumLogLevel(LogLevel.Warning))
)

// Which signal interrupted the run (runMain handles both alike): 130 for SIGINT, 143 for SIGTERM.
let signal: "SIGINT" | "SIGTERM" | undefined
process.once("SIGINT", () => (signal ??= "SIGINT"))
process.once("SIGTERM", () => (signal ??= "SIGTERM"))

Cli.run(process.argv).pipe(
  Effect.provide(Layer.mergeAll(NodeContext.layer, NodeStorage.layer, logging)),
  NodeRuntime.runMain({
    disableErrorReporting: true,
    disablePrettyLogger: true,
    teardown: (exit, onExit) =>
      onExit(
        Exit.isSuccess(exit)
          ? exit.value as number
          : Cause.isInterruptedOnly(exit.cause)
          ? (signal === "SIGTERM" ? Cli.ExitCode.Terminated : Cli.ExitCode.Interrupted)
          : Cli.ExitCode.Failure
      )
  })
)
