"""`validate`, `sizing`, `schema`: about the plan file alone; nothing is contacted."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from ailab_deploy.cli.output import JsonOption, PlanOption, load, out
from ailab_deploy.core.plan import json_schema
from ailab_deploy.core.sizing import Sizing, size_plan
from ailab_deploy.core.units import format_bytes


def validate(plan: Path = PlanOption) -> None:
    """Check the plan and report every problem with its file and line."""
    loaded = load(plan)
    vms = loaded.plan.vms
    out.print(f"{loaded.display_name}: valid ({len(vms)} VMs: {', '.join(vm.name for vm in vms)})")


def _sizing_json(sizing: Sizing) -> dict[str, object]:
    return {
        "llm": asdict(sizing.llm) if sizing.llm else None,
        "postgres": asdict(sizing.postgres) if sizing.postgres else None,
        "idle": asdict(sizing.idle),
        "placements": [asdict(placement) for placement in sizing.placements],
        "nodes": [asdict(use) for use in sizing.nodes],
    }


def sizing(plan: Path = PlanOption, as_json: bool = JsonOption) -> None:
    """Show what the plan's VMs need and what the hardware can deliver, with the arithmetic."""
    loaded = load(plan, quiet=as_json)
    result = size_plan(loaded.plan)
    if as_json:
        out.print_json(json.dumps(_sizing_json(result)))
        return
    where = {placement.vm: placement for placement in result.placements}
    fit = Table(title="Fit")
    for column in ("VM", "node", "vCPUs", "RAM", "disk", "storage", "roles"):
        fit.add_column(column)
    for vm in loaded.plan.vms:
        placed = where.get(vm.name)
        fit.add_row(
            vm.name,
            placed.node if placed else "-",
            str(vm.vcpus),
            format_bytes(vm.memory * 1024**2),
            f"{vm.disk} GiB",
            vm.storage,
            ", ".join(vm.roles),
        )
    out.print(fit)
    if len(result.nodes) > 1:
        nodes = Table(title="Nodes")
        for column in ("node", "VMs", "vCPUs / threads", "RAM / available"):
            nodes.add_column(column)
        for use in result.nodes:
            nodes.add_row(
                use.node,
                ", ".join(use.vms) or "-",
                f"{use.vcpus} / {use.threads}",
                f"{format_bytes(use.memory_mib * 1024**2)} / {format_bytes(use.available_mib * 1024**2)}",
            )
        out.print(nodes)
        for placement in result.placements:
            out.print(f"  {placement.vm} -> {placement.node}: {placement.reason}", markup=False)
    if result.llm is not None:
        llm = result.llm
        table = Table(title=f"LLM on {llm.vm_name}: {loaded.plan.llm.model} {loaded.plan.llm.quantization}")
        table.add_column("quantity")
        table.add_column("value", justify="right")
        table.add_row("minimum RAM", format_bytes(llm.min_memory_bytes))
        table.add_row("VM RAM", format_bytes(llm.vm_memory_bytes))
        table.add_row("threads", str(llm.threads))
        table.add_row(
            "CPU layout", f"cpu={llm.numa.cpu_type} sockets={llm.numa.sockets} cores={llm.numa.cores} numa=1"
        )
        table.add_row("affinity", llm.numa.affinity)
        table.add_row("expected tokens/s", f"{llm.expected_tokens_per_second:.1f}")
        table.add_row("ceiling tokens/s", f"{llm.ceiling_tokens_per_second:.1f}")
        out.print(table)
        out.print("[bold]Memory[/]")
        for step in llm.memory_steps:
            out.print(f"  {step}")
        out.print("[bold]Tokens per second[/] (generation is bound by memory bandwidth)")
        for step in llm.throughput_steps:
            out.print(f"  {step}")
        cost = llm.cost
        out.print(
            f"[bold]Electricity per token[/] at the expected speed: {cost.joules_per_token:.1f} J, "
            f"{cost.cost_per_million_tokens:.2f} {cost.currency} per 1M tokens"
        )
        for step in cost.steps:
            out.print(f"  {step}", markup=False)
    if result.postgres is not None:
        pg = result.postgres
        table = Table(
            title=f"PostgreSQL {pg.version} on {pg.vm_name}: {format_bytes(pg.memory_kb * 1024)}, "
            f"{pg.cpus} CPUs, {pg.storage_kind}, {pg.workload}"
        )
        table.add_column("setting")
        table.add_column("value", justify="right")
        for key, value in pg.settings.items():
            table.add_row(key, value)
        out.print(table)
    idle = result.idle
    out.print(f"[bold]Idle server[/]: {idle.cost_per_month:.2f} {idle.currency} per month")
    for step in idle.steps:
        out.print(f"  {step}", markup=False)


def schema(
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file."),
) -> None:
    """Print the JSON Schema of vms.yaml (for editors and CI)."""
    text = json.dumps(json_schema(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        out.print(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(sizing)
    app.command()(schema)
