"""Mutants of the cli guards, merged into tests/mutants.py (same format: name -> (file, original, mutated, tests, what))."""

CLI = "tests/test_cli.py"
VW = "tests/test_viz_world.py"
BOUNDS = [f"{VW}::test_event_bounds_at_their_edges"]
COST = [f"{VW}::test_event_cost_is_bounded_before_the_run"]
STROKE = [f"{VW}::test_stroke_into_is_stroke_mask_on_the_cells_near_the_stroke",
          f"{VW}::test_a_long_stroke_costs_its_area_not_the_world"]
MEMORY = [f"{CLI}::test_memory_estimate_refuses_with_the_numbers"]
SIZES = [f"{VW}::test_animation_size_limits_and_no_partial_file_left"]
IMAGES = [f"{CLI}::test_images_scale_by_their_own_depth"]
NUMBERS = [f"{CLI}::test_numbers_are_checked_before_any_output"]
SPACING = ["tests/test_seeds.py::test_random_positions_are_spacing_apart_up_to_the_most_that_fit"]
PICTURES = ["tests/test_seeds.py::test_marked_pixels_dark_on_light_or_opaque_on_transparent",
            "tests/test_seeds.py::test_positions_from_image_put_each_pixel_on_the_cell_under_its_centre"]
MODELS = [f"{CLI}::test_models_are_refused_where_they_lack_what_a_command_needs"]

MUTANTS = {
    # event bounds (validate_events / load_events)
    "cli-event-point-off-by-one": (
        "fastca/world.py", "or not (0 <= value[0] < h and 0 <= value[1] < w)):",
        "or not (0 <= value[0] <= h and 0 <= value[1] <= w)):", BOUNDS,
        "events: a center or stroke point one row/column past the world is accepted"),
    "cli-event-points-limit-off-by-one": (
        "fastca/world.py", "not 1 <= len(pts) <= MAX_STROKE_POINTS", "not 1 <= len(pts) < MAX_STROKE_POINTS", BOUNDS,
        "events: a stroke of exactly MAX_STROKE_POINTS points is refused"),
    "cli-event-step-off-by-one": (
        "fastca/world.py", 'if ev["step"] >= steps:', 'if ev["step"] > steps:', BOUNDS,
        "events: an event at the run's last step (never applied) is accepted"),
    "cli-event-count-unbounded": (
        "fastca/world.py", "not 1 <= count <= MAX_EVENT_COUNT", "not 1 <= count", BOUNDS,
        "events: 'count' has no upper bound"),
    "cli-event-tile-off-by-one": (
        "fastca/world.py", "or not (0 <= tile[0] < rows and 0 <= tile[1] < cols)):",
        "or not (0 <= tile[0] <= rows and 0 <= tile[1] <= cols)):", BOUNDS,
        "events: a replace tile one past the tile grid is accepted"),
    "cli-event-radius-unbounded": (
        "fastca/world.py", '_number(i, ev, "radius", 0, max(h, w))', '_number(i, ev, "radius", 0, float("inf"))',
        BOUNDS, "events: an erase radius larger than the world is accepted"),
    "cli-events-file-size-unbounded": (
        "fastca/world.py", "open_regular_file(path, MAX_EVENTS_FILE)", "open_regular_file(path, 2**62)",
        [f"{VW}::test_events_file_must_be_a_readable_json_file"],
        "events: a file larger than MAX_EVENTS_FILE is read whole"),
    "cli-event-cost-unchecked": (
        "fastca/world.py", "    if total > limit:\n", "    if False:\n", COST,
        "events: their total cost is never checked (a run can spend hours on events)"),
    "cli-event-cost-off-by-one": (
        "fastca/world.py", "    if total > limit:\n", "    if total >= limit:\n", COST,
        "events: a cost exactly at the limit is refused"),
    "cli-event-cost-floor-ignored": (
        "fastca/world.py", "max(EVENT_WORK_FLOOR, h * w * steps)", "h * w * steps", COST,
        "events: short runs get no floor (a few cheap events on a small world are refused)"),
    "cli-event-cost-replace-all-cheap": (
        "fastca/world.py", "        each = 4 * h * w\n", "        each = 4 * h\n", COST,
        "events: a replace_all is charged a row, not the world"),
    "cli-event-cost-not-checked-by-run-world": (
        "fastca/world.py", "    validate_events(events, world, steps)\n    rng = ", "    rng = ", COST,
        "run_world: events are not validated (nor their cost bounded) before the run"),
    "cli-event-cost-after-work": (
        "fastca/cli/simulate.py", "    validate_events(events, world, args.steps)  # every event checked",
        "    pass  # every event checked", [f"{CLI}::test_refused_before_the_work[event-cost]"],
        "simulate: events are checked only by run_world, after the banner and the output folder"),
    "cli-stroke-whole-rows": (
        "kernels/world.py", "x0, x1 = max(0, math.floor(xs - m)), min(w - 1, math.ceil(xe + m))", "x0, x1 = 0, w - 1",
        STROKE, "stroke: every cell of each row near a segment is evaluated (work grows with the world's width)"),
    "cli-stroke-one-window": (
        "fastca/world.py", "np.split(rows, np.flatnonzero(np.diff(rows // EDIT_BAND)) + 1)", "[rows]", STROKE,
        "stroke: one window for the whole stroke is sent to the simulation (its bounding box, up to the world)"),
    # memory estimate
    "cli-memory-unchecked": (
        "fastca/cli/outputs.py", "    if have is not None and need > 0.8 * have:\n        raise CLIError(f\"this run",
        "    if False:\n        raise CLIError(f\"this run", MEMORY,
        "memory: the estimate is never compared with the available memory"),
    "cli-memory-comparison-flipped": (
        "fastca/cli/outputs.py", "need > 0.8 * have:\n        raise CLIError(f\"this run",
        "need < 0.8 * have:\n        raise CLIError(f\"this run", MEMORY,
        "memory: runs that fit are refused and runs that do not are accepted"),
    "cli-memory-frames-ignored": (
        "fastca/cli/outputs.py", " + MEMORY_FRAMES * frame_bytes", "", MEMORY,
        "memory: the enlarged frame buffers are not counted (--scale 100000 tries to allocate TiBs)"),
    "cli-memory-scale-not-squared": (
        "fastca/cli/outputs.py", "frame_bytes = cells * 3 * scale * scale", "frame_bytes = cells * 3 * scale", MEMORY,
        "memory: a frame's size grows with --scale, not its square"),
    "cli-memory-steps-ignored": (
        "fastca/cli/outputs.py", " + steps * MEMORY_PER_STEP", "", MEMORY, "memory: the per-step curves are not counted"),
    "cli-memory-mnist-path-unchecked": (
        "fastca/cli/simulate.py", "        _check_size(28, 28, args)\n", "", [f"{CLI}::test_refused_before_the_work[memory-mnist]"],
        "memory: --mnist-index skips the estimate"),
    "cli-memory-image-unchecked": (
        "fastca/cli/outputs.py", "                check(im.height, im.width)\n", "                pass\n",
        [f"{CLI}::test_refused_before_the_work[memory-image]"], "memory: --image skips the estimate"),
    # the output folder
    "cli-out-not-test-written": (
        "fastca/cli/options.py", '        with open(probe, "wb") as f:\n            f.write(b"\\0" * 4096)\n        os.remove(probe)\n',
        "        pass\n", [f"{CLI}::test_refused_before_the_work[out-not-writable]"],
        "output folder: created but never test-written (an unwritable folder fails after the run)"),
    "cli-out-checked-after-work": (
        "fastca/cli/simulate.py", '    _check_out(args.out, animations.names)\n    print(f"fastca simulate:',
        '    print(f"fastca simulate:', [f"{CLI}::test_refused_before_the_work[out-not-writable]"],
        "simulate: the output folder is not checked before the work (its files fail at the end)"),
    "cli-out-folder-names-unchecked": (
        "fastca/cli/options.py", "            if os.path.isdir(p):\n                raise CLIError(f\"the output",
        "            if False:\n                raise CLIError(f\"the output",
        [f"{CLI}::test_output_name_taken_by_a_folder_fails_before_the_work[metrics.json]"],
        "output folder: an output name taken by a folder is found only when the run writes it"),
    "cli-out-partial-names-unchecked": (
        "fastca/cli/options.py", 'for p in (path, f"{path}.partial{os.path.splitext(name)[1]}"):', "for p in (path,):",
        [f"{CLI}::test_output_name_taken_by_a_folder_fails_before_the_work[final.png.partial.png]"],
        "output folder: a partial file's name taken by a folder is found only at the end of the run"),
    "viz-partial-left-on-failed-close": (
        "fastca/viz.py", "        except BaseException:\n            self.abort()\n            raise\n\n    def abort",
        "        except BaseException:\n            raise\n\n    def abort", SIZES,
        "AnimationWriter: a failed close (the name is a folder) leaves its *.partial.gif"),
    "viz-atomic-partial-left": (
        "fastca/viz.py", "    finally:\n        _remove_file(tmp)\n", "    finally:\n        pass\n", SIZES,
        "pictures: a failed write or rename leaves its *.partial.png"),
    # GIF / MP4 size limits
    "viz-gif-limit-removed": (
        "fastca/viz.py", 'if ext == ".gif" and not', 'if False and ext == ".gif" and not', SIZES,
        "GIF: frames wider than 65535 pixels are written (their size wraps in the 16-bit header)"),
    "viz-gif-limit-off-by-one": (
        "fastca/viz.py", "1 <= width <= GIF_MAX_SIDE)", "1 <= width < GIF_MAX_SIDE)", SIZES,
        "GIF: a frame of exactly 65535 pixels is refused"),
    "viz-mp4-limit-off-by-one": (
        "fastca/viz.py", "2 <= width <= MP4_MAX_SIDE)", "2 <= width <= MP4_MAX_SIDE + 1)", SIZES,
        "MP4: a frame one pixel wider than libx264's limit is accepted (ffmpeg then writes an empty file)"),
    "cli-gif-limit-after-work": (
        "fastca/cli/outputs.py", "    if error:\n        raise CLIError(f\"the animation cannot",
        "    if False:\n        raise CLIError(f\"the animation cannot", [f"{CLI}::test_refused_before_the_work[gif-size]"],
        "simulate: GIF frames past 65535 pixels are refused only by the writer, after the banner"),
    "cli-mp4-memory-unchecked": (
        "fastca/cli/outputs.py", "or _mp4_memory_error(h, w, scale, steps, channels)", "or None",
        [f"{CLI}::test_mp4_left_out_when_its_encoder_would_not_fit"],
        "MP4: ffmpeg's encoder memory (hundreds of bytes a pixel) is not counted (caught where ffmpeg is installed)"),
    # image scaling
    "cli-image-16bit-clipped": (
        "fastca/cli/outputs.py", 'if im.mode not in ("F", "I") and not im.mode.startswith("I;16"):',
        'if im.mode not in ("F", "I"):', IMAGES, "images: 16-bit levels are clipped to 0/255 by Pillow's 'L' conversion"),
    "cli-image-16bit-as-8bit": (
        "fastca/cli/outputs.py", "        levels /= 65535.0\n", "        levels /= 255.0\n", IMAGES,
        "images: 16-bit levels are divided by 255"),
    "cli-image-signed-float-not-stretched": (
        "fastca/cli/outputs.py", "if lo < 0 or hi > 1:  # not already", "if hi > 1:  # not already", IMAGES,
        "images: a float image in [-1, 1] is clipped instead of stretched from its range"),
    "cli-image-int-depth-off-by-one": (
        "fastca/cli/outputs.py", "if hi <= top)", "if hi < top)", IMAGES,
        "images: 32-bit integers whose maximum is exactly 65535 are scaled as 32-bit (dark)"),
    # numbers checked before any output (item 15)
    "cli-seed-unchecked": (
        "fastca/cli/options.py", "if seed is not None and not 0 <= seed < 2**64:", "if False:", NUMBERS,
        "--seed -1 fails only after the banner"),
    "cli-seed-off-by-one": (
        "fastca/cli/options.py", "not 0 <= seed < 2**64:", "not 0 <= seed <= 2**64:", NUMBERS,
        "--seed 2**64 passes the up-front check and fails after the banner"),
    "cli-fps-off-by-one": (
        "fastca/cli/options.py", 'if getattr(args, "fps", 1) > MAX_FPS:', 'if getattr(args, "fps", 1) >= MAX_FPS:',
        [f"{CLI}::test_simulate_mnist_index"], "--fps 100 (GIF's finest delay) is refused"),
    "cli-eval-storage-unchecked": (
        "fastca/cli/evaluate.py", "    if args.storage not in info.storages:\n", "    if False:\n", NUMBERS,
        "eval: an unknown --storage fails after the banner (caught when the MNIST files are in ../shared)"),
    # seeds (fastca.seeds, simulate --seeds)
    "cli-seeds-spacing-ignored": (
        "fastca/seeds.py", "    box = 2 * spacing - 1\n    rows, cols", "    box = spacing\n    rows, cols", SPACING,
        "seeds: boxes as wide as the spacing (seeds of neighbouring boxes can touch)"),
    "cli-seeds-offset-past-box": (
        "fastca/seeds.py", "np.minimum(spacing, height - y0)", "np.minimum(spacing + 1, height - y0)", SPACING,
        "seeds: a seed's row may lie one past its box's corner (closer than the spacing to the next box's)"),
    "cli-seeds-capacity-unchecked": (
        "fastca/seeds.py", "    if n > rows * cols:\n", "    if False:\n", SPACING,
        "seeds: more seeds than fit fail inside numpy (a bare ValueError: a traceback) instead of saying how many fit"),
    "cli-seeds-image-corner": (
        "fastca/seeds.py", "ys = ((2 * rows + 1) * height) // (2 * h)", "ys = (rows * height) // h", PICTURES,
        "seeds picture: a pixel's seed goes under its top-left corner, not its centre"),
    "cli-seeds-transparency-ignored": (
        "fastca/seeds.py", "if levels.shape[2] == 4 and (levels[..., 3] < HALF).any():", "if False:", PICTURES,
        "seeds picture: a shape on a transparent background marks only its dark pixels"),
    "cli-seeds-memory-unchecked": (
        "fastca/cli/seeded.py", "    _check_size(h, w, args, channels)\n", "",
        [f"{CLI}::test_refused_before_the_work[memory-seeds]"], "simulate --seeds: the memory estimate is skipped"),
    "cli-memory-channels-ignored": (
        "fastca/cli/outputs.py", "MEMORY_PER_CHANNEL * max(0, channels - 20)", "0",
        [f"{CLI}::test_memory_estimate_counts_a_described_models_channels"],
        "memory: a described model's channels past 20 are not counted (a 1024-channel state is 50x MNIST's)"),
    # models: the MNIST layout the digit commands need; errors: only fastca's own become exit 2
    "cli-mnist-layout-unchecked": (
        "fastca/cli/options.py", "    if lacks:\n        listed", "    if False:\n        listed", MODELS,
        "--model: a model without the MNIST readout runs the digit commands (and fails somewhere inside)"),
    "cli-bugs-exit-2": (
        "fastca/cli/__init__.py", "    except (FastcaError, OSError, MemoryError) as exc:\n",
        "    except (FastcaError, OSError, MemoryError, ValueError, TypeError, RuntimeError, KeyError) as exc:\n",
        [f"{CLI}::test_a_bug_keeps_its_traceback_and_a_user_error_is_one_line"],
        "main: bugs (ValueError, KeyError, ...) inside a command look like user errors (exit 2, no traceback)"),
}
