// Joins a run through the gateway with the JavaScript LangGraph SDK, unchanged:
//   node join_stream.mjs '{"apiUrl": ..., "threadId": ..., "runId": ..., "streamMode": [...],
//                          "lastEventId": ..., "limit": N}'
// prints one JSON line per part ({"event", "data", "id"}), then {"done": true}; with
// "limit", it stops after that many parts (the connection is dropped, as a cut would);
// with "pauseAfter", it stops reading after that many parts until a line comes on stdin (a
// slow client).
import { createInterface } from "node:readline";
import { Client } from "@langchain/langgraph-sdk";

const args = JSON.parse(process.argv[2]);
const client = new Client({ apiUrl: args.apiUrl, apiKey: null });
const options = {};
if (args.streamMode !== undefined) options.streamMode = args.streamMode;
if (args.lastEventId !== undefined) options.lastEventId = args.lastEventId;
let count = 0;
for await (const part of client.runs.joinStream(args.threadId ?? null, args.runId, options)) {
  process.stdout.write(JSON.stringify({ event: part.event, data: part.data, id: part.id ?? null }) + "\n");
  count += 1;
  if (args.limit !== undefined && count >= args.limit) break;
  if (count === args.pauseAfter) {
    const stdin = createInterface({ input: process.stdin });
    await stdin[Symbol.asyncIterator]().next();
    stdin.close();
  }
}
process.stdout.write(JSON.stringify({ done: true }) + "\n");
