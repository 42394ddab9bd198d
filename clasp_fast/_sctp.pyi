# Types of the compiled SCTP packet module (_ext/sctp.pyx). Checked against the built module by
# tests/test_stubs.py (mypy.stubtest).

from typing import Any, Callable, ClassVar, Final, final

from _typeshed import ReadableBuffer
from typing_extensions import disjoint_base

from ._dtls import RecordLayer

CHUNK_DATA: Final[int]
CHUNK_SACK: Final[int]
CHUNK_FORWARD_TSN: Final[int]
COMMON_HEADER_LENGTH: Final[int]
DATA_CHUNK_HEADER_LENGTH: Final[int]

def crc32c(data: ReadableBuffer) -> int: ...

@disjoint_base
class DataChunk:
    type: ClassVar[int]
    flags: int
    tsn: int
    stream_id: int
    stream_seq: int
    protocol: int
    user_data: bytes
    # The sender's bookkeeping (names as in aiortc's DataChunk).
    _acked: bool
    _abandoned: bool
    _in_flight: bool
    _retransmit: bool
    _book_size: int
    _misses: int
    _sent_count: int
    _expiry: float | None
    _max_retransmits: int | None
    _sent_time: float | None
    def __init__(self, flags: int = 0, tsn: int = 0, stream_id: int = 0, stream_seq: int = 0,
                 protocol: int = 0, user_data: bytes = b"") -> None: ...
    def __bytes__(self) -> bytes: ...

def chunk_size(user_data_length: int) -> int: ...
def build_packet(source_port: int, destination_port: int, verification_tag: int, control: bytes,
                 chunks: list[DataChunk]) -> bytes: ...
def seal_packets(layer: RecordLayer, source_port: int, destination_port: int, verification_tag: int,
                 packets: list[tuple[bytes, list[DataChunk]]]) -> tuple[list[bytes], int]:
    """The DTLS records of these SCTP packets, each written into its record and encrypted there:
    (records, DATA chunks). The layer must use the EVP backend."""
def build_chunk(chunk_type: int, flags: int, body: bytes) -> bytes: ...
def build_sack(cumulative_tsn: int, advertised_rwnd: int, gaps: list[tuple[int, int]],
               duplicates: list[int]) -> bytes: ...
def sack_gaps(misordered: Any, cumulative: int, max_gaps: int) -> list[tuple[int, int]]:
    """Ascending gap ack blocks (offsets from ``cumulative``) of the TSNs in ``misordered``."""
def build_forward_tsn(new_cumulative_tsn: int, streams: list[tuple[int, int]]) -> bytes: ...
def parse_packet(data: ReadableBuffer) -> tuple[int, int, int, list[Any]]:
    """(source port, destination port, verification tag, chunks): each chunk a DataChunk,
    (CHUNK_SACK, cumulative TSN, a_rwnd, gaps, duplicates), (CHUNK_FORWARD_TSN, new cumulative
    TSN, streams) or (type, flags, body)."""

# The per-chunk loops of the data path (clasp_fast.transport.sctp).
def fragment(queue: Any, user_data: bytes, piece_max: int, base_flags: int, tsn: int, stream_id: int,
             stream_seq: int, protocol: int, expiry: float | None, max_retransmits: int | None) -> tuple[int, int]:
    """Split a message into DataChunks appended to ``queue``: (next TSN, bytes booked)."""
def take_messages(queue: Any, outbound_queue: Any, outbound_bytes: int, room: int, tsn: int, piece_max: int,
                  stream_seqs: dict[int, int], released: list[tuple[Any, int]],
                  clock: Callable[[], float]) -> tuple[int, int, Any]:
    """Messages from aiortc's data channel queue onto ``outbound_queue`` as DataChunks while
    ``outbound_bytes`` < ``room``: (next TSN, outbound bytes, the channel without a stream id that
    stopped it, or None); bytes per channel appended to ``released``."""
def acknowledge(sent_queue: Any, cumulative: int) -> tuple[int, int, int, float | None]:
    """Chunks up to ``cumulative`` off ``sent_queue``: (chunks, newly acked bytes, bytes out of the
    flight, send time of the first when sent once)."""
def acknowledge_gaps(sctp: Any, sent_queue: Any, cumulative: int, gaps: list[tuple[int, int]]) -> tuple[int, int, bool]:
    """A SACK's gap blocks over ``sent_queue``: (newly acked bytes, bytes out of the flight, lost)."""
def mark_for_retransmission(sctp: Any, sent_queue: Any) -> int:
    """Every outstanding chunk marked for retransmission (or abandoned): bytes out of the flight."""
@final
class Bundler:
    """The packets of one transmit opportunity, filled chunk by chunk (``room`` bytes of chunks each)."""
    packets: list[tuple[bytes, list[DataChunk]]]
    control: bytes
    packet: list[DataChunk]
    used: int
    room: int
    def __init__(self, room: int, control: bytes) -> None: ...
    def add(self, chunk: DataChunk) -> None:
        """Append ``chunk`` to the packet being filled, or to a new one when it would pass ``room``."""
    def finish(self) -> list[tuple[bytes, list[DataChunk]]]:
        """Every packet, the last one included."""
def take_retransmissions(sent_queue: Any, flight_size: int, cwnd: int, recovery_transmit: bool,
                         bundler: Bundler) -> tuple[int, bool, bool, int, bool]:
    """Marked chunks into packets while the window allows: (flight size, recovery transmit, blocked,
    retransmitted, earliest)."""
def take_new_data(queue: Any, sent_queue: Any, flight_size: int, cwnd: int, window: int, bundler: Bundler,
                  now: float) -> tuple[int, int]:
    """New chunks into packets while the windows allow: (flight size, bytes taken)."""
def receive_in_order(sctp: Any, chunks: list[Any], start: int, messages: list[tuple[int, int, bytes]]) -> int:
    """Take the in-order DATA chunks from ``chunks[start:]``; the index of the first one not taken."""
def receive_datagrams(
    layer: Any, sctp: Any, batch: list[tuple[bytes, Any]], index: int, stop: int, messages: list[tuple[int, int, bytes]]
) -> tuple[int, list[Any] | None, list[Any] | None, int, int]:
    """DTLS datagrams of in-order DATA handled in compiled code: (next index, chunks and records
    left for the caller, datagrams read, bytes read)."""
