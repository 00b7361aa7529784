// The WebGPU driver the build's browser gate (browser_page.html) and the catalog's run.html
// share: a bundle's library through TVM's JS runtime (the global `tvmjs`, loaded before
// either function is called), its tensor cache, its RNN state and the embed, prefill and
// decode calls. A plain script, so it loads from file:// too: it defines WebGPUSession.
"use strict";

window.WebGPUSession = {
  // The library's VM on the browser's WebGPU adapter, its `_metadata` and the adapter in words.
  async open(wasm) {
    const tvm = await tvmjs.instantiate(new Uint8Array(wasm), tvmjs.createPolyfillWASI(), console.log);
    const gpu = await tvmjs.detectGPUDevice();
    if (gpu === undefined) throw new Error("this browser offers no WebGPU adapter");
    tvm.initWebGPU(gpu.device);
    const dev = tvm.webgpu();
    tvm.beginScope();
    const vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(dev));
    const meta = JSON.parse(vm.getFunction("_metadata")());
    const info = gpu.adapterInfo || {};
    const adapter = [info.vendor, info.architecture, info.description].filter((s) => s).join(" ");
    return { tvm, dev, vm, meta, adapter };
  },

  // Compiles the shaders and loads the tensor cache at `base` (cached under `scope`), for one
  // sequence: forward(ids) feeds `ids` to it, restart() starts it again.
  async session({ tvm, dev, vm, meta }, base, scope) {
    await tvm.asyncLoadWebGPUPipelines(vm.getInternalModule());
    await tvm.fetchTensorCache(base, dev, scope, "cache");
    const params = tvm.detachFromCurrentScope(tvm.getParamsFromCacheByName(meta.params.map((p) => p.name)));
    const addSequence = tvm.getGlobalFunc("vm.builtin.kv_state_add_sequence");
    const begin = tvm.getGlobalFunc("vm.builtin.kv_state_begin_forward");
    const end = tvm.getGlobalFunc("vm.builtin.kv_state_end_forward");
    const fn = (name) => tvm.detachFromCurrentScope(vm.getFunction(name));
    const embed = fn("embed"), prefill = fn("prefill"), decode = fn("decode"), createState = fn("create_rnn_state");
    let state = null;
    const restart = () => {
      if (state !== null) state.dispose();
      state = tvm.detachFromCurrentScope(createState(tvm.makeShapeTuple([1]), tvm.makeShapeTuple([1])));
      addSequence(state, new tvmjs.Scalar(0, "int64"));
    };
    // The logits (a Float32Array over the vocab, copied to the CPU) after feeding `ids` to the sequence.
    const forward = async (ids) => {
      tvm.beginScope();
      const input = tvm.empty([ids.length], "int32", dev);
      input.copyFrom(new Int32Array(ids));
      const embedded = embed(input, params);
      const x = embedded.view([1, ids.length, embedded.shape[embedded.shape.length - 1]]);
      begin(state, tvm.makeShapeTuple([0]), tvm.makeShapeTuple([ids.length]));
      const out = (ids.length > 1 ? prefill : decode)(x, state, params);
      end(state);
      const logits = out.get(0);
      const host = tvm.empty(logits.shape, logits.dtype, tvm.cpu());
      host.copyFrom(logits);
      await dev.sync();
      const row = Float32Array.from(host.toArray());
      tvm.endScope();
      return row;
    };
    restart();
    return { forward, restart };
  },
};
