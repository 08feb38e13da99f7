// Preloaded into the suite's test server (node --import): its server.mjs calls
// server.listen(port), which binds every interface; bind it to 127.0.0.1 only.
import http from 'node:http'

const listen = http.Server.prototype.listen
http.Server.prototype.listen = function (port, ...rest) {
  if ((typeof port === 'number' || typeof port === 'string') && (rest.length === 0 || typeof rest[0] === 'function')) {
    return listen.call(this, Number(port), '127.0.0.1', ...rest)
  }
  return listen.call(this, port, ...rest)
}
