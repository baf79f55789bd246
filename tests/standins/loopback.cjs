// Preloaded with `node -r ./loopback.cjs` so that every TCP server the stand-in opens listens on
// 127.0.0.1 only: kinesalite has no --host option and kinesis-local hard-codes 0.0.0.0.
"use strict";
const net = require("net");
const original = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const first = args[0];
  if (first !== null && typeof first === "object" && !Array.isArray(first) && first.path === undefined) {
    args[0] = Object.assign({}, first, { host: "127.0.0.1" });
  } else if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    const rest = args.slice(1);
    if (typeof rest[0] === "string" || rest[0] === undefined || rest[0] === null) rest.shift();
    args = [Number(first), "127.0.0.1", ...rest];
  }
  return original.apply(this, args);
};
