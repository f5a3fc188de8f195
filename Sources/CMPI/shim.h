#include <mpi.h>

/* Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE …) are macros over addresses of
   library globals, which Swift does not import; these return them. */
static inline MPI_Comm agora_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype agora_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype agora_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype agora_mpi_int(void) { return MPI_INT; }
static inline MPI_Datatype agora_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Op agora_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op agora_mpi_max(void) { return MPI_MAX; }
static inline void *agora_mpi_in_place(void) { return MPI_IN_PLACE; }
