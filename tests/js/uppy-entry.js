// Bundled by esbuild for the test page (as an app bundles Uppy): headless, no dashboard.
import Uppy from '@uppy/core'
import Tus from '@uppy/tus'

globalThis.HopperUppy = { Uppy, Tus }
