// The test page's uploads, called by tests/integration/test_tusjs.py with page.evaluate.
// tus-js-client comes as its browser bundle (a <script> tag, global `tus`), Uppy bundled
// (global `HopperUppy`). Hopper is on another origin: every request is cross-origin (CORS).
'use strict'

const CHUNK_BYTES = 256 * 1024 // many PATCHes for a few MiB
const RETRY_DELAYS_MS = [100, 500, 1000, 2000]
const LAST_MODIFIED = 1700000000000 // part of tus-js-client's fingerprint: keep it fixed

// xorshift32 as little-endian words: the test computes the same bytes and their SHA-256.
function makeFile (seed, size, name) {
  const view = new DataView(new ArrayBuffer(Math.ceil(size / 4) * 4))
  let x = seed >>> 0
  for (let i = 0; i < view.byteLength; i += 4) {
    x = (x ^ (x << 13)) >>> 0
    x = (x ^ (x >>> 17)) >>> 0
    x = (x ^ (x << 5)) >>> 0
    view.setUint32(i, x, true)
  }
  const bytes = new Uint8Array(view.buffer, 0, size)
  return new File([bytes], name, { type: 'application/octet-stream', lastModified: LAST_MODIFIED })
}

function tusOptions (spec, file) {
  return {
    endpoint: spec.endpoint,
    chunkSize: CHUNK_BYTES,
    retryDelays: RETRY_DELAYS_MS,
    headers: spec.headers || {},
    metadata: { filename: file.name, filetype: file.type, processors: 'inspect' }
  }
}

function settled () {
  let done
  const promise = new Promise((resolve, reject) => { done = { resolve, reject } })
  return [promise, done]
}

// Uploads until at least spec.stopAfter bytes are in, then aborts without terminating (as a
// closed tab would): the upload's URL stays in localStorage for a later page to resume.
window.uploadThenAbort = function (spec) {
  const file = makeFile(spec.seed, spec.size, spec.name)
  const [promise, done] = settled()
  const upload = new tus.Upload(file, {
    ...tusOptions(spec, file),
    onChunkComplete (chunk, accepted) {
      if (accepted >= spec.stopAfter) {
        upload.abort().then(() => done.resolve({ url: upload.url, accepted }), done.reject)
      }
    },
    onSuccess: () => done.reject(new Error('the upload finished before it was interrupted')),
    onError: (error) => done.reject(error)
  })
  upload.start()
  return promise
}

// A new Upload of the same file: it finds the earlier one in localStorage and continues it.
// Resolves with the requests it made ("HEAD", "PATCH <offset>").
window.resumeUpload = async function (spec) {
  const file = makeFile(spec.seed, spec.size, spec.name)
  const [promise, done] = settled()
  const requests = []
  const upload = new tus.Upload(file, {
    ...tusOptions(spec, file),
    onBeforeRequest (req) {
      requests.push(`${req.getMethod()} ${req.getHeader('Upload-Offset') ?? ''}`.trim())
    },
    onSuccess: () => done.resolve(),
    onError: (error) => done.reject(error)
  })
  const previous = await upload.findPreviousUploads()
  if (previous.length === 0) throw new Error('no earlier upload of this file in localStorage')
  upload.resumeFromPreviousUpload(previous[0])
  upload.start()
  await promise
  return { url: upload.url, requests }
}

// One whole upload; resolves with its URL, or rejects with tus-js-client's error.
window.uploadWhole = function (spec) {
  const file = makeFile(spec.seed, spec.size, spec.name)
  const [promise, done] = settled()
  const upload = new tus.Upload(file, {
    ...tusOptions(spec, file),
    retryDelays: [], // a refusal is the answer, not something to wait out
    onBeforeRequest (req) {
      // tus-js-client's documented way to send cookies along (credentials: include)
      if (spec.withCredentials) req.getUnderlyingObject().withCredentials = true
    },
    onSuccess: () => done.resolve(upload.url),
    onError: (error) => done.reject(error)
  })
  upload.start()
  return promise
}

// Headless Uppy with its Tus plugin: one file to the end.
window.uppyUpload = async function (spec) {
  const file = makeFile(spec.seed, spec.size, spec.name)
  const uppy = new HopperUppy.Uppy({ autoProceed: false })
  uppy.use(HopperUppy.Tus, {
    endpoint: spec.endpoint,
    chunkSize: CHUNK_BYTES,
    retryDelays: RETRY_DELAYS_MS
  })
  uppy.addFile({ name: file.name, type: 'text/plain', data: file, source: 'test' })
  const result = await uppy.upload()
  return {
    urls: result.successful.map((f) => f.uploadURL),
    failed: result.failed.map((f) => String(f.error))
  }
}
