"""Reference side of peft_interop_test: loads a LoRA adapter directory written
by our C++ code with Hugging Face PEFT and checks that every adapted layer
gives the outputs our layers gave.

  peft_interop.py <base.safetensors> <adapter dir> <io.safetensors>

base.safetensors holds the base model's weights under Hugging Face names;
io.safetensors holds, for each adapted module path P, the input "x:P" and our
output "y:P".  Exits non-zero (printing why) on any difference above 1e-5,
on PEFT warnings about missing or unexpected keys, or when PEFT adapts a
different set of modules than ours.
"""
import sys
import warnings

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file


class TinyCausalLM(torch.nn.Module):
    """Only a container: tests call the adapted layers one by one."""

    def prepare_inputs_for_generation(self, *args, **kwargs):  # looked up by PeftModelForCausalLM
        raise NotImplementedError


def build(base):
    """A module tree with an nn.Linear at every '<path>.weight' of `base`."""
    root = TinyCausalLM()
    for key, weight in base.items():
        if not key.endswith(".weight"):
            continue
        parts = key[: -len(".weight")].split(".")
        parent = root
        for i, part in enumerate(parts[:-1]):
            if not hasattr(parent, part):
                child = torch.nn.ModuleList() if parts[i + 1].isdigit() else torch.nn.Module()
                parent.add_module(part, child)
            parent = getattr(parent, part)
        out_features, in_features = weight.shape
        bias = key[: -len("weight")] + "bias" in base
        parent.add_module(parts[-1], torch.nn.Linear(in_features, out_features, bias=bias))
    root.load_state_dict(base, strict=True)
    return root


def main(base_path, adapter_dir, io_path):
    model = build(load_file(base_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(model, adapter_dir)
    problems = [str(w.message) for w in caught
                if "missing" in str(w.message).lower() or "unexpected" in str(w.message).lower()]

    io = load_file(io_path)
    ours = sorted(k[2:] for k in io if k.startswith("x:"))
    inner = peft_model.base_model.model
    adapted = sorted(name for name, m in inner.named_modules() if isinstance(m, LoraLayer))
    if adapted != ours:
        problems.append(f"PEFT adapted {adapted}, we adapted {ours}")

    peft_model.eval()
    with torch.no_grad():
        for path in ours:
            y = inner.get_submodule(path)(io["x:" + path])
            diff = (y - io["y:" + path]).abs().max().item()
            print(f"{path}: max |diff| = {diff:.3g}")
            if not diff <= 1e-5:
                problems.append(f"{path}: outputs differ by {diff}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
