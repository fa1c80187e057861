// Graph tensor names of a layer's output and side tensors: the engine reads results back by these names.
const SWITCHES_SUFFIX = '__switches';
export const activationName = (layer: string) => `${layer}__out`;
export const switchesName = (layer: string) => `${layer}${SWITCHES_SUFFIX}`;
export const dropoutMaskName = (layer: string) => `${layer}__mask`;
export const layerOfSwitches = (name: string) => (name.endsWith(SWITCHES_SUFFIX) ? name.slice(0, -SWITCHES_SUFFIX.length) : undefined);
