"""PyTorch eager reference of gantry's conditional WGAN-GP (the seed's model and step).

Used two ways:
  python gantry_ref.py bench [--step plain|one-pass] [--image-size 64] [--batch 128] [--steps 5]
                             [--threads N] [--channels-last]
      times full training steps like `worker bench` and prints the same line. `--step plain`
      (the default) is the book's step as a PyTorch user ports it: the critic called separately
      on the fakes, the reals and the interpolates, the penalty by autograd.grad on the
      interpolates only, fakes made under no_grad, torch.optim.Adam. `--step one-pass` is the
      same maths with real, fake and interpolated images scored in one critic pass (gantry's
      structure until the penalty's double backward was found to pay for all three);
  python gantry_ref.py check IN.safetensors OUT.safetensors
      loads weights and inputs written by the trainer's numerics test, recomputes the generator
      and critic outputs, the losses with the gradient penalty, and one Adam step of the critic,
      and writes them for the test to compare.

Layer names follow the Rust VarStore paths so weights load one-to-one.
"""

import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

GP_EPSILON = 1e-12


def doublings(image_size):
    return int(math.log2(image_size // 4))


class Generator(nn.Module):
    def __init__(self, image_size, channels, classes, z_dim, width):
        super().__init__()
        self.z_dim, self.classes = z_dim, classes
        bn = dict(eps=1e-3, momentum=0.1)
        self.input = nn.ConvTranspose2d(z_dim + classes, width, 4, 1, 0, bias=False)
        self.input_bn = nn.BatchNorm2d(width, **bn)
        hidden = doublings(image_size) - 1
        self.blocks, self.bns = nn.ModuleList(), nn.ModuleList()
        cin = width
        for i in range(hidden):
            cout = width // 2 if i + 1 == hidden else width
            self.blocks.append(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False))
            self.bns.append(nn.BatchNorm2d(cout, **bn))
            cin = cout
        self.output = nn.ConvTranspose2d(cin, channels, 4, 2, 1)

    def forward(self, z, onehot):
        x = torch.cat([z, onehot], 1)[:, :, None, None]
        x = F.leaky_relu(self.input_bn(self.input(x)), 0.2)
        for conv, bn in zip(self.blocks, self.bns):
            x = F.leaky_relu(bn(conv(x)), 0.2)
        return torch.tanh(self.output(x))

    def named_for_gantry(self):
        """Parameters and buffers under the Rust VarStore names."""
        out = {}
        for name, t in list(self.named_parameters()) + list(self.named_buffers()):
            if name.endswith("num_batches_tracked"):
                continue
            parts = name.split(".")
            if parts[0] == "blocks":
                name = f"block{parts[1]}.{parts[2]}"
            elif parts[0] == "bns":
                name = f"block{parts[1]}_bn.{parts[2]}"
            out[name] = t
        return out


class Critic(nn.Module):
    def __init__(self, image_size, channels, classes, width, dropout):
        super().__init__()
        self.image_size, self.dropout = image_size, dropout
        self.blocks = nn.ModuleList()
        self.slopes = []
        cin = channels + classes
        for i in range(doublings(image_size)):
            cout = width // 2 if i == 0 else width
            self.blocks.append(nn.Conv2d(cin, cout, 4, 2, 1))
            self.slopes.append(0.3 if i == 1 else 0.2)
            cin = cout
        self.output = nn.Conv2d(cin, 1, 4, 1, 0)

    def forward(self, images, onehot):
        b, k = onehot.shape
        planes = onehot[:, :, None, None].expand(b, k, self.image_size, self.image_size)
        x = torch.cat([images, planes], 1)
        for i, (conv, slope) in enumerate(zip(self.blocks, self.slopes)):
            x = F.leaky_relu(conv(x), slope)
            if i > 0 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
        return self.output(x).flatten(1).squeeze(1)

    def named_for_gantry(self):
        out = {}
        for name, t in self.named_parameters():
            parts = name.split(".")
            if parts[0] == "blocks":
                name = f"block{parts[1]}.{parts[2]}"
            out[name] = t
        return out


def load_named(module, tensors):
    with torch.no_grad():
        for name, t in module.named_for_gantry().items():
            t.copy_(tensors[name])


def one_pass_critic_losses(critic, real, fake, alpha, onehot, gp_weight):
    """The seed's critic loss, with real, fake and interpolated images in one critic pass (the
    penalty's double backward then runs through all three)."""
    b = real.shape[0]
    x_hat = (real + alpha.view(b, 1, 1, 1) * (fake - real)).detach().requires_grad_(True)
    scores = critic(torch.cat([real, fake, x_hat]), torch.cat([onehot, onehot, onehot]))
    s_real, s_fake, s_hat = scores.split(b)
    c_wass = s_fake.mean() - s_real.mean()
    (grad,) = torch.autograd.grad(s_hat.sum(), x_hat, create_graph=True)
    norm = (grad.square().sum(dim=(1, 2, 3)) + GP_EPSILON).sqrt()
    c_gp = (norm - 1.0).square().mean()
    return c_wass + gp_weight * c_gp, c_wass, c_gp


def critic_losses(critic, real, fake, alpha, onehot, gp_weight):
    """The book's critic loss as a plain port writes it, and as gantry computes it: the critic
    called on the fakes, then the reals, then the interpolates; the penalty's double backward
    through the interpolated batch only."""
    b = real.shape[0]
    c_wass = critic(fake, onehot).mean() - critic(real, onehot).mean()
    x_hat = (real + alpha.view(b, 1, 1, 1) * (fake - real)).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat, onehot).sum(), x_hat, create_graph=True)
    norm = (grad.square().sum(dim=(1, 2, 3)) + GP_EPSILON).sqrt()
    c_gp = (norm - 1.0).square().mean()
    return c_wass + gp_weight * c_gp, c_wass, c_gp


def train_step(generator, critic, g_opt, c_opt, real, onehot, z_dim, critic_steps=3, gp_weight=10.0,
               losses=critic_losses):
    b, device = real.shape[0], real.device
    for _ in range(critic_steps):
        z = torch.randn(b, z_dim, device=device)
        with torch.no_grad():
            fake = generator(z, onehot)
        alpha = torch.rand(b, device=device)
        c_loss, c_wass, c_gp = losses(critic, real, fake, alpha, onehot, gp_weight)
        c_opt.zero_grad(set_to_none=True)
        c_loss.backward()
        c_opt.step()
    z = torch.randn(b, z_dim, device=device)
    for p in critic.parameters():
        p.requires_grad_(False)
    g_loss = -critic(generator(z, onehot), onehot).mean()
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    g_opt.step()
    for p in critic.parameters():
        p.requires_grad_(True)
    return torch.stack([c_loss.detach(), c_wass.detach(), c_gp.detach(), g_loss.detach()])


def bench(args):
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    torch.manual_seed(0)
    g = Generator(args.image_size, 3, 2, 32, args.width).to(device)
    c = Critic(args.image_size, 3, 2, args.width, 0.3).to(device)
    opt = dict(lr=5e-5, betas=(0.5, 0.9), eps=1e-7)
    g_opt, c_opt = torch.optim.Adam(g.parameters(), **opt), torch.optim.Adam(c.parameters(), **opt)
    real = torch.rand(args.batch, 3, args.image_size, args.image_size, device=device) * 2 - 1
    if args.channels_last:
        g, c = g.to(memory_format=torch.channels_last), c.to(memory_format=torch.channels_last)
        g_opt, c_opt = torch.optim.Adam(g.parameters(), **opt), torch.optim.Adam(c.parameters(), **opt)
        real = real.contiguous(memory_format=torch.channels_last)
    onehot = F.one_hot(torch.randint(2, (args.batch,)), 2).float().to(device)
    losses = critic_losses if args.step == "plain" else one_pass_critic_losses
    for _ in range(args.warmup):
        train_step(g, c, g_opt, c_opt, real, onehot, 32, losses=losses).tolist()
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(g, c, g_opt, c_opt, real, onehot, 32, losses=losses).tolist()
    seconds = time.perf_counter() - start
    print(f"train_step images_per_sec={args.steps * args.batch / seconds:.2f} ms_per_step={seconds * 1000 / args.steps:.1f}"
          f"  (pytorch {torch.__version__}, {args.step} step, "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}"
          f"{', channels-last' if args.channels_last else ''}{', cudnn.benchmark' if args.cudnn_benchmark else ''})")


def check(args):
    from safetensors.torch import load_file, save_file

    t = load_file(args.input)
    size, channels, classes, z_dim, width = (int(v) for v in t["spec"].tolist())
    g = Generator(size, channels, classes, z_dim, width)
    c = Critic(size, channels, classes, width, 0.0)
    load_named(g, {k[2:]: v for k, v in t.items() if k.startswith("g.")})
    load_named(c, {k[2:]: v for k, v in t.items() if k.startswith("c.")})
    onehot = F.one_hot(t["labels"].long(), classes).float()
    out = {}
    g.train()
    out["fake"] = g(t["z"], onehot).detach()
    out["running_mean"] = g.input_bn.running_mean.detach().clone()
    c.train()
    out["scores"] = c(t["real"], onehot).detach()
    c_loss, c_wass, c_gp = critic_losses(c, t["real"], t["fake_in"], t["alpha"], onehot, float(t["gp_weight"]))
    out["losses"] = torch.stack([c_loss, c_wass, c_gp]).detach()
    lr, b1, b2, eps = t["adam"].tolist()
    opt = torch.optim.Adam(c.parameters(), lr=lr, betas=(b1, b2), eps=eps)
    for _ in range(2):  # two steps: the second exercises the moments
        c_loss, _, _ = critic_losses(c, t["real"], t["fake_in"], t["alpha"], onehot, float(t["gp_weight"]))
        opt.zero_grad()
        c_loss.backward()
        opt.step()
    for name, p in c.named_for_gantry().items():
        out["after." + name] = p.detach().clone()
    save_file({k: v.contiguous() for k, v in out.items()}, args.output)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--image-size", type=int, default=64)
    b.add_argument("--batch", type=int, default=128)
    b.add_argument("--steps", type=int, default=5)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--width", type=int, default=128)
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--channels-last", action="store_true", help="channels-last layout (as gantry uses)")
    b.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    b.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its algorithms (as gantry does)")
    b.add_argument("--step", choices=["plain", "one-pass"], default="plain",
                   help="plain: the book's step as a PyTorch user ports it; one-pass: real, fake and "
                        "interpolated images in one critic pass")
    c = sub.add_parser("check")
    c.add_argument("input")
    c.add_argument("output")
    args = parser.parse_args()
    bench(args) if args.command == "bench" else check(args)


if __name__ == "__main__":
    main()
