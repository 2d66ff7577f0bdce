"""Client-side encryption of the stored stream with age (pyrage): public recipients write, identities read.

The backup holds only recipients (public keys), so nothing in the backup pod can decrypt what
it wrote; restore and verify get an identity from a mounted file. The stored object is a plain
age file: `age -d -i identity.txt < x.sql.gz.age | gunzip` reads it without this tool.

pyrage pulls from a file-like and pushes to one, while a backup pushes and a replay pulls, so
a thread runs pyrage between two small byte-bounded buffers (`_Pump`). The caller's thread
does every read of the source and every call of the sink (the upload, the hasher): upload
errors, SIGTERM and aborts behave as without encryption, and the pump's thread only ever
waits on the pump, so stopping it never waits for a part in flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from collections import deque
from typing import Callable, Iterable, Iterator

import pyrage
from pyrage import ssh, x25519

from .errors import BackupError, ConfigError, IntegrityError
from .manifest import ENCRYPTED_SUFFIX, Manifest

SCHEME = "age"
RECIPIENTS_ENV = "ENCLAVE_BACKUP_ENCRYPTION_RECIPIENTS"
RECIPIENTS_VALUE = "Backup.Encryption.Recipients"
IDENTITY_ENV = "ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE"
IDENTITY_VALUES = "restore.identitySecretName for a restore, Verify.IdentitySecretName for verify"
# No media type is registered for age files; the object is opaque bytes to any reader but age.
ENCRYPTED_CONTENT_TYPE = "application/octet-stream"
MAKE_KEY = "make one with `age-keygen -o identity.txt` (docs/security.md)"

# Each side of a pump buffers about this much; with pyrage's own 64 KiB chunk that is all
# encryption adds to a backup's memory.
BUFFER_BYTES = 2 << 20
# pyrage writes 8 KiB (decrypting) or 64 KiB (encrypting) at a time: joined into pieces of this
# size, so the two threads hand over, and wake each other, a few times per MiB only.
PIECE_BYTES = 1 << 20
# age's payload: 64 KiB chunks of plaintext, each with a 16-byte tag (age-encryption.org/v1).
AGE_CHUNK = 64 << 10
AGE_TAG = 16
HEADER_PER_RECIPIENT = 1024  # an ssh-rsa 4096 stanza is about 700 bytes, an X25519 one about 120
_SSH_TYPES = ("ssh-ed25519", "ssh-rsa")
_SECRET = re.compile(r"(?i)AGE-SECRET-KEY-|PRIVATE KEY|AGE-PLUGIN-")


class Refused(IntegrityError):
    """The object cannot be decrypted at all (not our identity, not an age file): never a mere
    truncation, which a reader of a prefix expects."""


# --- recipients -------------------------------------------------------------------------

def _canonical(line: str) -> str:
    """The recipient without what does not change the key: an SSH key's comment, age's letter case."""
    fields = line.split()
    if fields and fields[0] in _SSH_TYPES:
        return " ".join(fields[:2])
    return line.strip().lower()


def fingerprint(recipient: str) -> str:
    """16 hex digits of the sha256 of the recipient as written without its comment
    (`age1...`, or `ssh-ed25519 AAAA...`): `printf %s 'age1...' | sha256sum | cut -c1-16`."""
    return hashlib.sha256(_canonical(recipient).encode()).hexdigest()[:16]


def parse_recipients(lines: Iterable[str]) -> list:
    """pyrage recipients for the backup; a bad one is a ConfigError naming where it came from.

    A private key given by mistake is never repeated in the message (it would reach the log)."""
    parsed = []
    for number, line in enumerate(lines, 1):
        where = f"recipient {number} in {RECIPIENTS_ENV} (Helm value {RECIPIENTS_VALUE})"
        if _SECRET.search(line):
            raise ConfigError(f"{where} is a private key, not a recipient; it is not repeated here. Give its public "
                              "key instead (`age-keygen -y identity.txt`, or the SSH key's .pub line) and keep the "
                              "identity out of the backup's configuration: only restore and verify need it")
        kind = "age" if line.strip().lower().startswith("age1") else (line.split() or [""])[0]
        if kind != "age" and kind not in _SSH_TYPES:
            raise ConfigError(f"{where} is neither an age X25519 recipient (age1...) nor an SSH public key "
                              f"({' or '.join(_SSH_TYPES)} AAAA...)")
        try:
            if kind == "age":
                parsed.append(x25519.Recipient.from_str(line.strip()))
            else:
                parsed.append(ssh.Recipient.from_str(_canonical(line)))
        except pyrage.RecipientError as exc:
            # Only public-looking text gets here (private keys are refused above): its start helps find it.
            raise ConfigError(f"{where} ({line.strip()[:24]}...) is not a valid {kind} recipient: {exc}") from None
    return parsed


def manifest_field(recipients: Iterable[str]) -> dict:
    """What the manifest says about the encryption: the scheme and to whom, by fingerprint."""
    return {"scheme": SCHEME, "recipients": [fingerprint(r) for r in recipients]}


# --- identities --------------------------------------------------------------------------

def load_identities(path: str) -> list:
    """The identities in the file restore and verify mount: age identity lines (AGE-SECRET-KEY-1...,
    # comments and blank lines skipped, as age-keygen writes them) or one unencrypted SSH private key.
    Errors name the file and the line, never its content."""
    where = f"{IDENTITY_ENV}={path!r}"
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 20)
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror}") from None
    if b"-----BEGIN" in raw:
        try:
            return [ssh.Identity.from_buffer(raw)]
        except pyrage.IdentityError as exc:
            hint = ("remove its passphrase (`ssh-keygen -p -N '' -f <file>`) or use an age identity"
                    if "decrypted" in str(exc) else "an ed25519 or RSA key in OpenSSH or PEM form is needed")
            raise ConfigError(f"{where} holds an SSH private key that cannot be used: {exc}; {hint}") from None
    identities = []
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is neither an age identity file nor an SSH private key; {MAKE_KEY}") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.upper().startswith("AGE-SECRET-KEY-1"):
            raise ConfigError(f"line {number} of {where} is not an age identity (AGE-SECRET-KEY-1...) and the file "
                              f"holds no SSH private key; it is not repeated here; {MAKE_KEY}")
        try:
            identities.append(x25519.Identity.from_str(line.upper()))
        except pyrage.IdentityError as exc:
            raise ConfigError(f"line {number} of {where} is not a valid age identity ({exc}); "
                              "it is not repeated here") from None
    if not identities:
        raise ConfigError(f"{where} holds no identity; {MAKE_KEY}")
    return identities


def identities_for(config, key: str, manifest: Manifest) -> list | None:
    """The identities to read `key` with: None for a plain backup. Called before any database work,
    so a restore without the identity it needs fails saying so, having changed nothing."""
    if bool(manifest.encryption) != key.endswith(ENCRYPTED_SUFFIX):
        raise IntegrityError(f"{key}: its key and its manifest disagree on whether it is encrypted; "
                             "nothing was changed")
    if not manifest.encryption:
        return None
    if manifest.encryption.get("scheme") != SCHEME:
        raise IntegrityError(f"{key} is encrypted with {str(manifest.encryption.get('scheme'))[:40]!r}, which this "
                             "tool cannot read; nothing was changed")
    if not config.encryption_identity_file:
        raise ConfigError(f"{key} is encrypted (age, to recipients {_names(manifest)}) and no identity is "
                          f"configured: set {IDENTITY_ENV} to a file holding one of them (Helm value "
                          f"{IDENTITY_VALUES}: a Secret with the key identity.txt); nothing was changed")
    return load_identities(config.encryption_identity_file)


def _names(manifest: Manifest) -> str:
    return ", ".join(manifest.encryption.get("recipients") or []) or "none recorded"


def stored_bytes(plain: int, manifest: Manifest) -> int:
    """How many stored bytes hold at least the first `plain` bytes of the compressed stream."""
    if not manifest.encryption:
        return plain
    chunks = -(-plain // AGE_CHUNK)
    recipients = len(manifest.encryption.get("recipients") or []) + 1
    return chunks * (AGE_CHUNK + AGE_TAG) + recipients * HEADER_PER_RECIPIENT


# --- the pump ----------------------------------------------------------------------------

class _Stopped(Exception):
    """Raised inside pyrage's reads and writes once the pump is abandoned, so its thread ends."""


class _Failed(Exception):
    """What went wrong in the pump's thread (`error`), raised in the caller's; kept apart from
    errors of the caller's own source or sink, which pass through untouched."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class _Pump:
    """Runs `work(reader, writer)` (pyrage's encrypt_io or decrypt_io) on its own thread.

    The caller pushes input with push() and gets back what output is ready; finish() ends the
    input and returns the rest. Input and output each hold about BUFFER_BYTES. An error in the
    thread is raised in the caller once the output made before it is handed over. abandon()
    stops and joins the thread from any state; it is safe to call more than once.
    """

    def __init__(self, work: Callable, name: str):
        self._work = work
        self._cond = threading.Condition()
        self._input: deque = deque()
        self._input_bytes = 0
        self._output: deque = deque()
        self._output_bytes = 0
        self._ended = False  # no more input
        self._stopped = False  # abandoned
        self._done = False  # the thread has finished
        self._dropped = False  # input came after the thread ended
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # the caller's side

    def push(self, data: bytes) -> Iterator[bytes]:
        """Queue `data`, handing out the output that is ready meanwhile; waits while the input is full."""
        while True:
            with self._cond:
                while self._input_bytes >= BUFFER_BYTES and not self._output and not self._done:
                    self._cond.wait()
                ready = self._take_output()
                queued = not self._done and self._input_bytes < BUFFER_BYTES
                if queued:
                    self._input.append(data)
                    self._input_bytes += len(data)
                    self._cond.notify_all()
                elif self._done:
                    self._dropped = True  # the thread has ended: this input is never read
                    if not ready:
                        self._raise()
            yield from ready
            if queued:
                return

    def finish(self) -> Iterator[bytes]:
        """End the input; the output still to come, then the thread's error if it had one."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()
        while True:
            with self._cond:
                while not self._output and not self._done:
                    self._cond.wait()
                ready = self._take_output()
                done = self._done and not self._output
            yield from ready
            if done:
                break
        self._thread.join()
        with self._cond:
            self._raise()

    def abandon(self) -> None:
        with self._cond:
            self._stopped = True
            self._input.clear()
            self._output.clear()
            self._input_bytes = self._output_bytes = 0
            self._cond.notify_all()
        self._thread.join()

    def _take_output(self) -> list[bytes]:
        ready = list(self._output)
        self._output.clear()
        if ready:
            self._output_bytes = 0
            self._cond.notify_all()
        return ready

    def _raise(self) -> None:
        if self.error is not None:
            raise _Failed(self.error)
        if self._dropped or self._input:
            raise _Failed(IntegrityError("the object goes on after the end of its age stream"))

    # pyrage's side, on the thread

    def _run(self) -> None:
        writer = _Writer(self)
        try:
            self._work(_Reader(self), writer)
            writer.flush()
        except BaseException as exc:  # handed to the caller, which raises it
            try:
                writer.flush()  # the output made before the error is good (age authenticates each chunk)
            except _Stopped:
                pass
            with self._cond:
                self.error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def next_input(self) -> bytes:
        """The next piece of input for the thread's reader; b"" at the end."""
        with self._cond:
            while not self._input and not self._ended and not self._stopped:
                self._cond.wait()
            if self._stopped:
                raise _Stopped()
            if not self._input:
                return b""
            head = self._input.popleft()
            self._input_bytes -= len(head)
            self._cond.notify_all()  # room for the caller
            return head

    def write(self, data: bytes) -> None:
        with self._cond:
            while self._output_bytes >= BUFFER_BYTES and not self._stopped:
                self._cond.wait()
            if self._stopped:
                raise _Stopped()
            self._output.append(data)
            self._output_bytes += len(data)
            self._cond.notify_all()


class _Reader:
    """The file pyrage reads its input from. pyrage asks for 8 KiB at a time: the piece being
    read is sliced here without the pump's lock, which is taken once per piece."""

    def __init__(self, pump: _Pump):
        self._pump = pump
        self._head = b""
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        if self._offset >= len(self._head):
            self._head, self._offset = self._pump.next_input(), 0
            if not self._head:
                return b""
        if size is None or size < 0:
            size = len(self._head) - self._offset
        piece = self._head[self._offset:self._offset + size]
        self._offset += len(piece)
        return piece

    def readable(self) -> bool:
        return True


class _Writer:
    """The file pyrage writes its output to; small writes are joined into pieces of PIECE_BYTES."""

    def __init__(self, pump: _Pump):
        self._pump = pump
        self._pieces: list[bytes] = []
        self._size = 0

    def write(self, data) -> int:
        n = len(data)
        if n >= PIECE_BYTES and not self._pieces:
            self._pump.write(bytes(data))
            return n
        self._pieces.append(bytes(data))
        self._size += n
        if self._size >= PIECE_BYTES:
            self.flush()
        return n

    def flush(self) -> None:
        if self._pieces:
            joined = b"".join(self._pieces)
            self._pieces, self._size = [], 0
            self._pump.write(joined)

    def writable(self) -> bool:
        return True


# --- the two directions ------------------------------------------------------------------

class _Encryptor:
    """A stage (see compress.Stage) that encrypts what is written to it and hands the age file to `sink`."""

    def __init__(self, recipients: list, sink: Callable[[bytes], None]):
        if not recipients:
            raise ValueError("no recipients")
        self.sink = sink
        self._pump = _Pump(lambda reader, writer: pyrage.encrypt_io(reader, writer, recipients), "age-encrypt")

    def close(self) -> None:
        """Encrypt what is left and write age's last chunk; raises what failed in the thread."""
        try:
            for piece in self._pump.finish():
                self.sink(piece)
        except _Failed as failed:
            raise BackupError(f"age encryption failed: {failed.error}") from None

    def write(self, data) -> None:
        if not data:
            return
        try:
            for piece in self._pump.push(data if isinstance(data, bytes) else bytes(data)):
                self.sink(piece)
        except _Failed as failed:
            raise BackupError(f"age encryption failed: {failed.error}") from None

    def abandon(self) -> None:
        self._pump.abandon()


@contextlib.contextmanager
def encryptor(recipients: list, sink: Callable[[bytes], None]):
    """`with encryptor(recipients, sink) as stage: stage.write(data)`: the age file of all that was
    written reaches `sink` by the end of a clean exit; when the block raises, the thread is stopped
    and the rest dropped (the upload is aborted by its own block)."""
    stage = _Encryptor(recipients, sink)
    try:
        yield stage
        stage.close()
    finally:
        stage.abandon()  # joins the thread; nothing left to do after close()


def decrypted(identities: list, chunks: Iterable[bytes], recipients: Iterable[str] = (),
              complete: bool = True) -> Iterator[bytes]:
    """The plaintext of the age file in `chunks`, in pieces of about PIECE_BYTES.

    Every piece handed out is authenticated; a stream cut short is an IntegrityError after the
    last whole chunk (with complete=False, a read of the object's first bytes, it just ends).
    `recipients` are the manifest's fingerprints, for the message when no identity fits."""
    names = ", ".join(recipients) or "none recorded"
    pump = _Pump(lambda reader, writer: pyrage.decrypt_io(reader, writer, identities), "age-decrypt")
    try:
        for chunk in chunks:
            if chunk:
                yield from pump.push(chunk)
        yield from pump.finish()
    except _Failed as failed:
        exc = failed.error
        if isinstance(exc, pyrage.DecryptError) and "No matching keys" in str(exc):
            raise Refused(f"the backup is encrypted to recipients {names}, and the identity in {IDENTITY_ENV} "
                          f"(Helm value {IDENTITY_VALUES}) is not one of them; nothing was changed") from None
        if isinstance(exc, pyrage.DecryptError):
            raise Refused(f"the object is not a readable age file ({exc}): it is damaged or was replaced; "
                          "nothing was changed") from None
        if isinstance(exc, IntegrityError):
            raise exc from None
        # pyrage's OSError: a chunk failed its tag, or the stream was cut short
        if complete:
            raise IntegrityError(f"the age stream is damaged or truncated ({exc})") from None
    finally:
        pump.abandon()


def plaintext(manifest: Manifest, identities: list | None, chunks: Iterable[bytes],
              complete: bool = True) -> Iterator[bytes]:
    """The compressed stream of a stored object: decrypted if the manifest says it is encrypted."""
    if not manifest.encryption:
        yield from chunks
        return
    yield from decrypted(identities or [], chunks, manifest.encryption.get("recipients") or [], complete)
