"""Spoken words, synthesized offline with espeak-ng, for a speech-recognition task.

- Audio: espeak-ng's formant synthesizer (the ``libespeak-ng.so`` and ``espeak-ng-data``
  bundled by the ``espeakng-loader`` wheel, driven through ctypes), 16-bit mono at
  ``SAMPLE_RATE`` Hz, returned as float32 in [-1, 1]. A speaker is an English voice
  variant, ``"en+NAME"`` (the files in ``espeak-ng-data/voices/!v/``); ``speaker_split``
  holds some speakers out for testing. Rate (words per minute) and pitch (0-99) vary too.
- Labels: espeak reports every phoneme it speaks as an event carrying its ASCII mnemonic
  (Kirshenbaum-like: ``T r i:`` for "three") and its first sample. Stress marks (``'``
  primary, ``,`` secondary, ``%`` unstressed) are removed and pauses (``_``, ``_:``) are
  dropped. ``pronounce`` gives the same symbols from espeak's dictionary and rules. The
  language is British English (espeak's ``en``), so "four" is ``f o@`` (no r).
- Features: log-mel spectrogram, ``log(mel power + 1e-6)``, 25 ms Hann window, 10 ms hop,
  ``torch.stft`` (centred frames, zero padding), n_fft the next power of two of the window
  (551 samples at 22050 Hz, so 1024; the hop is 220 samples): ``1 + N // 220`` frames.
  The mel filterbank is built here in numpy: triangles with peak 1, centres equally
  spaced on the HTK mel scale ``mel = 2595 log10(1 + f / 700)`` from 0 Hz to the Nyquist
  frequency, applied to the power spectrum.
- Noise: white Gaussian noise of standard deviation ``noise`` times the RMS of the clean
  audio (so ``noise`` = 1 is 0 dB SNR), deterministic per (noise seed, utterance).

Determinism: espeak-ng keeps synthesis state in C statics that no API call resets (pitch
flutter index, automatic gain control, echo buffer, the libc ``rand()`` behind breathy
voices); in one process, 89 of the 104 variants give different samples when the same text
is spoken twice. So the library runs in a helper process (started once, on first use;
the library is initialised there once) that forks a pristine copy of itself per request:
every synthesis starts from the same freshly initialised state and gives the same bytes.
POSIX only (``os.fork``).

Clean audio, phonemes and their starts are cached on disk (``.npz``, no pickle) under
``$E2ELAB_CACHE/speech`` or ``~/.cache/e2elab/speech``, keyed by the utterance, the
espeakng-loader version and the sample rate.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from e2elab.errors import E2ELabError

SAMPLE_RATE = 22050  # espeak-ng's output rate (checked when the library starts)
HOP_SECONDS = 0.01  # feature frame hop
WINDOW_SECONDS = 0.025  # feature window
MELS = 40  # default mel bands
LOG_FLOOR = 1e-6
LANGUAGE = "en"  # espeak's English (British), the base of every voice variant
RATES = (80, 450)  # espeak's accepted words-per-minute range
PITCHES = (0, 99)
CACHE_VERSION = 1
LOADER = "espeakng-loader"
INSTALL = "pip install espeakng-loader==0.2.4"

_STRESS = "',%"  # espeak's stress marks: primary, secondary, unstressed
_WORD = re.compile(r"[a-z']*[a-z][a-z']*")

# espeak-ng's C API (speak_lib.h)
_SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS: the callback receives all samples
_PHONEME_EVENTS = 0x0001  # espeakINITIALIZE_PHONEME_EVENTS
_DONT_EXIT = 0x8000  # espeakINITIALIZE_DONT_EXIT: fail with a code, never exit()
_EVENT_END, _EVENT_PHONEME = 0, 7  # espeakEVENT_LIST_TERMINATED, espeakEVENT_PHONEME
_RATE, _PITCH = 1, 3  # espeakRATE, espeakPITCH
_POS_CHARACTER = 1
_CHARS_AUTO = 0  # no espeakENDPAUSE: no sentence pause after the last word
_RAND_SEED = 1


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # samples since the start of this synthesis
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Synthesis:
    audio: np.ndarray  # float32 (N,), in [-1, 1], SAMPLE_RATE
    phonemes: tuple[str, ...]  # spoken, in order, stress marks removed, pauses dropped
    starts: tuple[int, ...]  # each phoneme's first sample in ``audio``

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True)
class Utterance:
    words: tuple[str, ...]
    voice: str
    rate: int
    pitch: int

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass(frozen=True)
class Spoken:
    utterance: Utterance
    features: np.ndarray  # float32 (frames, mels), log-mel of the audio with its noise
    phonemes: tuple[str, ...]  # as spoken (Synthesis.phonemes)
    seconds: float  # duration of the clean audio
    onsets: tuple[int, ...] = ()  # each phoneme's first feature frame


# ---------------------------------------------------------------- voices and speakers


def _missing(detail: str) -> E2ELabError:
    return E2ELabError(f"espeak-ng is unavailable ({detail}); run `{INSTALL}`")


def _loader() -> Any:
    try:
        import espeakng_loader
    except ImportError as error:
        raise _missing(f"cannot import espeakng_loader: {error}") from None
    return espeakng_loader


@cache
def loader_version() -> str:
    """The installed espeakng-loader version (it pins the espeak-ng build and its data)."""
    try:
        return metadata.version(LOADER)
    except metadata.PackageNotFoundError:
        raise _missing(f"package {LOADER} is not installed") from None


@cache
def voices() -> tuple[str, ...]:
    """The English voice variants, sorted: ``"en+NAME"`` for each file in voices/!v/."""
    folder = Path(_loader().get_data_path()) / "voices" / "!v"
    if not folder.is_dir():
        raise _missing(f"no voice folder at {folder}")
    return tuple(sorted(f"{LANGUAGE}+{p.name}" for p in folder.iterdir() if p.is_file()))


def check_voice(voice: str) -> None:
    if voice not in voices():
        example = voices()[0] if voices() else "en+Andy"
        raise E2ELabError(
            f"unknown voice {voice!r}; choose one of e2elab.data.speech.voices(), e.g. {example}"
        )


def speaker_split(
    test_share: float = 0.25, seed: int = 0
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training voices, test voices): disjoint, together all voices, test has >= 1."""
    every = voices()
    if not 0.0 < test_share < 1.0:
        raise E2ELabError(f"test_share must be in (0, 1), got {test_share}; pass e.g. 0.25")
    if len(every) < 2:
        raise _missing(f"only {len(every)} voice(s) found, need 2 to split")
    tests = min(len(every) - 1, max(1, round(test_share * len(every))))
    order = np.random.default_rng([seed, 7]).permutation(len(every))
    test = tuple(sorted(every[i] for i in order[:tests]))
    train = tuple(v for v in every if v not in test)
    return train, test


# ---------------------------------------------------------------- espeak, in the helper


def _load_library() -> ctypes.CDLL:
    """Load and initialise libespeak-ng (in the helper process only)."""
    loader = _loader()
    try:
        lib = ctypes.CDLL(loader.get_library_path())
    except OSError as error:
        raise _missing(f"cannot load {loader.get_library_path()}: {error}") from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip
    lib.espeak_TextToPhonemes.argtypes = [
        ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
    ]  # fmt: skip
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    options = _PHONEME_EVENTS | _DONT_EXIT
    rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, loader.get_data_path().encode(), options)
    if rate != SAMPLE_RATE:
        raise _missing(f"espeak_Initialize returned {rate}, expected rate {SAMPLE_RATE}")
    lib.espeak_SetVoiceByName(LANGUAGE.encode())  # loaded once here, not in every fork
    return lib


def _strip(mnemonic: str) -> str:
    return mnemonic.lstrip(_STRESS)


def _synth_in_child(lib: ctypes.CDLL, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """Speak one text (in a fresh fork): header {phonemes, starts}, int16 samples."""
    chunks: list[bytes] = []
    phonemes: list[str] = []
    starts: list[int] = []

    def collect(wav: Any, count: int, events: Any) -> int:
        if count > 0 and wav:
            chunks.append(ctypes.string_at(wav, 2 * count))
        i = 0
        while events[i].type != _EVENT_END:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                name = _strip(event.id.string.decode("ascii", "replace"))
                if name and not name.startswith("_"):
                    phonemes.append(name)
                    starts.append(int(event.sample))
            i += 1
        return 0

    callback = _CALLBACK(collect)
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(request["voice"].encode()) != 0:
        raise RuntimeError(f"espeak could not load voice {request['voice']!r}")
    lib.espeak_SetParameter(_RATE, request["rate"], 0)
    lib.espeak_SetParameter(_PITCH, request["pitch"], 0)
    text = request["text"].encode()
    status = lib.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_AUTO, None, None)
    if status != 0:
        raise RuntimeError(f"espeak_Synth failed with code {status}")
    return {"phonemes": phonemes, "starts": starts}, b"".join(chunks)


def _phonemes_in_child(lib: ctypes.CDLL, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """espeak_TextToPhonemes for each word: ASCII mnemonics, separated by ``|``."""
    found = []
    for word in request["words"]:
        lib.espeak_SetVoiceByName(LANGUAGE.encode())
        pointer = ctypes.c_char_p(word.encode())
        names: list[str] = []
        while pointer.value:
            clause = lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_AUTO, ord("|") << 8)
            names += re.split(r"[|\s]+", (clause or b"").decode("ascii", "replace"))
        found.append([n for n in map(_strip, names) if n and not n.startswith("_")])
    return {"words": found}, b""


_HANDLERS = {"synth": _synth_in_child, "phonemes": _phonemes_in_child}


def _frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    return json.dumps({**header, "bytes": len(payload)}).encode() + b"\n" + payload


def _answer(lib: ctypes.CDLL, request: dict[str, Any]) -> bytes:
    """The framed answer to one request; failures become an error header."""
    try:
        ctypes.CDLL(None).srand(_RAND_SEED)  # breathy voices draw noise from libc rand()
        lib.espeak_ng_SetRandSeed(_RAND_SEED)
        return _frame(*_HANDLERS[request["op"]](lib, request))
    except Exception as error:
        return _frame({"error": f"{type(error).__name__}: {error}"})


def _fork_and_run(lib: ctypes.CDLL, request: dict[str, Any]) -> bytes:
    """Run one request in a fork of this (never-synthesizing) process; its framed answer."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: pristine library state, fixed random seeds; never returns
        try:
            os.close(read_end)
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(_answer(lib, request))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not answer:
        return _frame({"error": f"espeak crashed (wait status {status}) on {request!r}"})
    return answer


def _serve() -> None:
    """The helper process: initialise espeak once, then answer requests from stdin."""
    # Ctrl-C reaches the whole process group: the parent decides, the helper ends with
    # its stdin (no traceback of its own)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the library prints goes to stderr, not into the protocol
    try:
        lib = _load_library()
        version = (lib.espeak_Info(None) or b"?").decode()
        channel.write(_frame({"sample_rate": SAMPLE_RATE, "espeak": version}))
    except E2ELabError as error:
        channel.write(_frame({"error": str(error)}))
        return
    finally:
        channel.flush()
    for line in sys.stdin.buffer:
        channel.write(_fork_and_run(lib, json.loads(line)))
        channel.flush()


# ---------------------------------------------------------------- the helper, from here


class _Helper:
    """The helper process and its pipes; one request at a time (a lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None
        self.owner = os.getpid()  # a forked copy of this object must not share the pipes
        self.espeak = ""

    def _start(self) -> None:
        source = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path, "OPENBLAS_NUM_THREADS": "1"}
        command = "from e2elab.data.speech import _serve; _serve()"
        self.process = subprocess.Popen(
            [sys.executable, "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        header, _ = self._read()
        if "error" in header:
            self.close()
            raise E2ELabError(header["error"])
        self.espeak = header["espeak"]

    def _read(self) -> tuple[dict[str, Any], bytes]:
        assert self.process is not None and self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.close()
            raise _missing("the espeak helper process exited; see the messages above")
        header = json.loads(line)
        return header, _read_exactly(self.process.stdout, header["bytes"])

    def ask(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        with self.lock:
            if self.owner != os.getpid():  # we are a fork: the helper belongs to the parent
                self.process, self.owner = None, os.getpid()
            if self.process is None or self.process.poll() is not None:
                self._start()
            assert self.process is not None and self.process.stdin is not None
            try:
                self.process.stdin.write(json.dumps(request).encode() + b"\n")
                self.process.stdin.flush()
            except BrokenPipeError:
                self.close()
                raise _missing("the espeak helper process exited") from None
            header, payload = self._read()
        if "error" in header:
            raise RuntimeError(f"espeak-ng failed: {header['error']}")
        return header, payload

    def close(self) -> None:
        if self.process is not None and self.owner == os.getpid():
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # type: ignore[union-attr]
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            if self.process.poll() is None:
                self.process.kill()
            self.process = None


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size) if size else b""
    if len(data) != size:
        raise _missing("the espeak helper process stopped mid-answer")
    return data


_helper = _Helper()
atexit.register(_helper.close)
_pronounced: dict[str, tuple[str, ...]] = {}  # lexicon's cache


def espeak_version() -> str:
    """espeak-ng's own version string (starts the helper process)."""
    if not _helper.espeak:
        _helper.ask({"op": "phonemes", "words": []})
    return _helper.espeak


# ---------------------------------------------------------------- synthesis and lexicon


def _check_range(name: str, value: int, bounds: tuple[int, int]) -> None:
    if not bounds[0] <= value <= bounds[1]:
        raise E2ELabError(f"{name} {value} is outside espeak's range; use {bounds[0]}-{bounds[1]}")


def synthesize(text: str, voice: str, rate: int = 175, pitch: int = 50) -> Synthesis:
    """Speak ``text`` with ``voice`` at ``rate`` words per minute and ``pitch`` (0-99)."""
    if not text.strip():
        raise E2ELabError("cannot synthesize empty text; pass at least one word")
    check_voice(voice)
    _check_range("rate", rate, RATES)
    _check_range("pitch", pitch, PITCHES)
    request = {"op": "synth", "text": text, "voice": voice, "rate": rate, "pitch": pitch}
    header, payload = _helper.ask(request)
    audio = np.frombuffer(payload, dtype=np.int16).astype(np.float32) / 32768.0
    return Synthesis(audio, tuple(header["phonemes"]), tuple(header["starts"]))


def _check_word(word: str) -> None:
    if not isinstance(word, str) or not _WORD.fullmatch(word):
        raise E2ELabError(
            f"espeak cannot speak the word {word!r}; use lowercase letters a-z and apostrophes"
        )


def pronounce(word: str) -> tuple[str, ...]:
    """``word``'s phonemes by espeak's dictionary and rules (stress marks removed)."""
    return lexicon([word])[word]


def lexicon(words: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``pronounce`` for each word (asked of espeak in one batch, then cached)."""
    words = list(dict.fromkeys(words))
    for word in words:
        _check_word(word)
    missing = [w for w in words if w not in _pronounced]
    if missing:
        header, _ = _helper.ask({"op": "phonemes", "words": missing})
        for word, names in zip(missing, header["words"], strict=True):
            if not names:
                raise E2ELabError(f"espeak gives no phonemes for the word {word!r}; drop it")
            _pronounced[word] = tuple(names)
    return {w: _pronounced[w] for w in words}


# ---------------------------------------------------------------- features


def window_samples() -> int:
    return round(WINDOW_SECONDS * SAMPLE_RATE)


def hop_samples() -> int:
    return int(HOP_SECONDS * SAMPLE_RATE)


def fft_size() -> int:
    return 1 << (window_samples() - 1).bit_length()


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """The HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@cache
def mel_filterbank(mels: int = MELS, n_fft: int = 0) -> np.ndarray:
    """(mels, n_fft // 2 + 1) triangles, peak 1, centres evenly spaced in HTK mel."""
    n_fft = n_fft or fft_size()
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(SAMPLE_RATE / 2), mels + 2))
    bins = np.linspace(0.0, SAMPLE_RATE / 2, n_fft // 2 + 1)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - low) / (centre - low)
    falling = (high - bins) / (high - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    bank.flags.writeable = False
    return bank


def log_mel(audio: np.ndarray, mels: int = MELS) -> np.ndarray:
    """float32 (frames, mels): log(mel power + 1e-6), 25 ms window, 10 ms hop."""
    import torch

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise E2ELabError(f"log_mel needs 1-D audio with samples, got shape {audio.shape}")
    if mels < 1 or mels > fft_size() // 2:
        raise E2ELabError(f"mels must be in 1-{fft_size() // 2}, got {mels}; try {MELS}")
    spectrum = torch.stft(
        torch.from_numpy(audio),
        n_fft=fft_size(),
        hop_length=hop_samples(),
        win_length=window_samples(),
        window=torch.hann_window(window_samples()),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = spectrum.abs().square()  # (n_fft // 2 + 1, frames)
    bank = torch.from_numpy(np.array(mel_filterbank(mels, fft_size())))
    return torch.log(bank @ power + LOG_FLOOR).T.contiguous().numpy()


# ---------------------------------------------------------------- utterances, cached


def cache_folder(cache: Path | None = None) -> Path:
    """``cache``, or ``$E2ELAB_CACHE/speech``, or ``~/.cache/e2elab/speech``."""
    if cache is not None:
        return Path(cache)
    return Path(os.environ.get("E2ELAB_CACHE") or Path.home() / ".cache" / "e2elab") / "speech"


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _fields(utterance: Utterance) -> list[Any]:
    return [list(utterance.words), utterance.voice, utterance.rate, utterance.pitch]


def cache_key(utterance: Utterance) -> str:
    return _digest(CACHE_VERSION, _fields(utterance), loader_version(), SAMPLE_RATE)


def _read(path: Path) -> Synthesis:
    """A cache file's synthesis; any problem raises (the caller re-synthesizes)."""
    with np.load(path, allow_pickle=False) as data:
        audio, phonemes, starts = data["audio"], data["phonemes"], data["starts"]
    ok = (
        audio.ndim == 1
        and audio.dtype == np.int16
        and audio.size > 0
        and phonemes.ndim == starts.ndim == 1
        and phonemes.shape == starts.shape
        and phonemes.dtype.kind == "U"
        and starts.dtype.kind == "i"
        and bool(((starts >= 0) & (starts <= audio.size)).all())
    )
    if not ok:
        raise ValueError(f"{path} does not hold a valid synthesis")
    names = tuple(str(p) for p in phonemes)
    return Synthesis(audio.astype(np.float32) / 32768.0, names, tuple(int(s) for s in starts))


def _write(path: Path, synthesis: Synthesis) -> None:
    """Write atomically: a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(
                file,
                audio=np.round(synthesis.audio * 32768.0).astype(np.int16),
                phonemes=np.array(synthesis.phonemes, dtype=str).reshape(-1),
                starts=np.array(synthesis.starts, dtype=np.int64).reshape(-1),
            )
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def clean_synthesis(utterance: Utterance, cache: Path | None = None) -> Synthesis:
    """The utterance's clean synthesis, from the disk cache if valid (else made and saved)."""
    path = cache_folder(cache) / f"{cache_key(utterance)}.npz"
    if path.exists():
        try:
            return _read(path)
        except Exception:  # corrupt, truncated or foreign: re-synthesize and overwrite
            pass
    u = utterance
    synthesis = synthesize(u.text, u.voice, u.rate, u.pitch)
    with contextlib.suppress(OSError):  # an unwritable cache only costs time
        _write(path, synthesis)
    return synthesis


def add_noise(audio: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``audio`` plus white Gaussian noise of std ``noise`` x its RMS."""
    if noise < 0:
        raise E2ELabError(f"noise must be >= 0 (a multiple of the audio's RMS), got {noise}")
    if noise == 0:
        return audio
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return (audio + rng.normal(0.0, noise * rms, audio.shape)).astype(np.float32)


def speak(
    utterance: Utterance,
    noise: float = 0.0,
    noise_seed: int = 0,
    mels: int = MELS,
    cache: Path | None = None,
) -> Spoken:
    """Synthesize (cached), add noise (deterministic per seed and utterance), log-mel."""
    clean = clean_synthesis(utterance, cache)
    salt = int(_digest(_fields(utterance))[:16], 16)
    noisy = add_noise(clean.audio, noise, np.random.default_rng([noise_seed, salt]))
    onsets = tuple(start // hop_samples() for start in clean.starts)
    return Spoken(utterance, log_mel(noisy, mels), clean.phonemes, clean.seconds, onsets)


def utterances(
    vocabulary: Sequence[str],
    count: int,
    voices: Sequence[str],
    seed: int,
    max_words: int = 4,
    rates: Sequence[int] = (140, 175, 210),
    pitches: Sequence[int] = (35, 50, 65),
) -> list[Utterance]:
    """``count`` utterances of 1..max_words words, each part drawn uniformly."""
    if not vocabulary or not voices or not rates or not pitches:
        raise E2ELabError("utterances needs a non-empty vocabulary, voices, rates and pitches")
    if max_words < 1 or count < 0:
        raise E2ELabError(f"need max_words >= 1 and count >= 0, got {max_words} and {count}")
    for word in vocabulary:
        _check_word(word)
    for voice in voices:
        check_voice(voice)
    for rate in rates:
        _check_range("rate", rate, RATES)
    for pitch in pitches:
        _check_range("pitch", pitch, PITCHES)
    rng = np.random.default_rng([seed, 11])
    lengths = rng.integers(1, max_words + 1, size=count)
    return [
        Utterance(
            words=tuple(vocabulary[i] for i in rng.integers(len(vocabulary), size=length)),
            voice=voices[rng.integers(len(voices))],
            rate=int(rates[rng.integers(len(rates))]),
            pitch=int(pitches[rng.integers(len(pitches))]),
        )
        for length in lengths
    ]
